//! Layers point one way: no import circle between the files of `media-node/src`.
//!
//! Reads every `.rs` file under `src/` (except `main.rs`, a crate of its own), collects the
//! module paths each one names — `use` trees (groups, `self`, renames, globs) and inline paths
//! starting with `crate::`, `super::`, `self::` or a child module's name — resolves each to the
//! file defining the longest module prefix, and fails on any cycle in that file graph, printing
//! the circle and the paths that make each step. `mod` declarations are containment, not
//! imports. Comments and string literals are ignored.
//!
//! A lower layer talks up through `Recipient<M>` (with `M` defined down where it is sent from)
//! or plain data, never by naming the higher file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path (`[]` for `lib.rs`, `["sfu", "udp"]` for `sfu/udp.rs`).
struct SourceFile {
    name: String,
    module: Vec<String>,
    code: String,
}

#[test]
fn no_import_circle_between_the_files_of_src() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    assert!(
        files.len() > 3,
        "found only {} files in {src:?}",
        files.len()
    );
    let graph = import_graph(&files);
    let circles = circles(&graph);
    if !circles.is_empty() {
        let mut report = String::new();
        for circle in &circles {
            report.push_str(&format!("\nimport circle: {}\n", circle.join(" -> ")));
            for step in circle.windows(2) {
                let via = &graph[&step[0]][&step[1]];
                report.push_str(&format!(
                    "  {} -> {} via {}\n",
                    step[0],
                    step[1],
                    via.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        panic!("media-node/src has import circles (a lower layer must not name a higher one; use Recipient<M> or plain data):{report}");
    }
}

/// Every `.rs` file under `dir`, with its module path.
fn read_tree(root: &Path) -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable src dir") {
            let path: PathBuf = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src");
            let name = rel.to_string_lossy().replace('\\', "/");
            if name == "main.rs" || name.starts_with("bin/") {
                continue; // Binary crates: their `crate::` is not this library.
            }
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("lib" | "mod")) {
                module.pop();
            }
            let code = strip_comments_and_strings(&std::fs::read_to_string(&path).expect("utf-8"));
            out.push(SourceFile { name, module, code });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// file -> file it imports -> the paths that make it so.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn import_graph(files: &[SourceFile]) -> Graph {
    let modules: BTreeMap<&[String], &str> = files
        .iter()
        .map(|f| (f.module.as_slice(), f.name.as_str()))
        .collect();
    let mut graph = Graph::new();
    for file in files {
        let edges = graph.entry(file.name.clone()).or_default();
        let children: BTreeSet<&str> = modules
            .keys()
            .filter(|m| m.len() == file.module.len() + 1 && m.starts_with(&file.module))
            .map(|m| m[m.len() - 1].as_str())
            .collect();
        for (path, inline_depth) in module_paths(&file.code) {
            let Some(absolute) = absolute(&path, &file.module, inline_depth, &children) else {
                continue;
            };
            // The longest prefix that is a file.
            let target = (0..=absolute.len())
                .rev()
                .find_map(|n| modules.get(&absolute[..n]))
                .copied();
            if let Some(target) = target {
                if target != file.name {
                    edges
                        .entry(target.to_string())
                        .or_default()
                        .insert(path.join("::"));
                }
            }
        }
    }
    graph
}

/// `path` as seen from a file at `module`, `inline_depth` inline modules deep, made absolute.
/// `None` for paths outside the crate (`std::`, other crates, locals).
fn absolute(
    path: &[String],
    module: &[String],
    inline_depth: usize,
    children: &BTreeSet<&str>,
) -> Option<Vec<String>> {
    let first = path.first()?.as_str();
    match first {
        "crate" | "$crate" => Some(path[1..].to_vec()),
        "self" => Some(module.iter().chain(&path[1..]).cloned().collect()),
        "super" => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            // Inside an inline `mod tests { .. }`, the first `super`s stay in this file.
            let up = supers.saturating_sub(inline_depth);
            let base = &module[..module.len().checked_sub(up)?];
            Some(base.iter().chain(&path[supers..]).cloned().collect())
        }
        child if inline_depth == 0 && children.contains(child) => {
            Some(module.iter().chain(path).cloned().collect())
        }
        _ => None,
    }
}

/// Every module path in `code` that could name another file, with how many inline modules
/// deep it sits: whole `use` trees expanded, then inline `a::b::c` paths outside them.
fn module_paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let inline_mods = inline_module_spans(&chars);
    let depth_at = |at: usize| {
        inline_mods
            .iter()
            .filter(|(s, e)| *s <= at && at < *e)
            .count()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !is_ident_start(chars[i]) || (i > 0 && is_ident_char(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        let (word, end) = ident_at(&chars, i);
        if word == "use" {
            let Some(semi) = chars[end..].iter().position(|c| *c == ';') else {
                break;
            };
            let tree: String = chars[end..end + semi].iter().collect();
            for path in expand_use_tree(&tree) {
                out.push((path, depth_at(start)));
            }
            i = end + semi + 1;
            continue;
        }
        // An inline path: ident(::ident)*.
        let mut path = vec![word];
        let mut at = end;
        while chars.get(at) == Some(&':') && chars.get(at + 1) == Some(&':') {
            let next = skip_ws(&chars, at + 2);
            if !chars.get(next).is_some_and(|c| is_ident_start(*c)) {
                break;
            }
            let (seg, seg_end) = ident_at(&chars, next);
            path.push(seg);
            at = seg_end;
        }
        if path.len() > 1 {
            let prefixed = start > 0 && chars[start - 1] == '$';
            if prefixed && path[0] == "crate" {
                path[0] = "$crate".into();
            }
            out.push((path, depth_at(start)));
        }
        i = at.max(end);
    }
    out
}

/// `(start, end)` char ranges of inline `mod name { .. }` bodies.
fn inline_module_spans(chars: &[char]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_ident_start(chars[i]) && (i == 0 || !is_ident_char(chars[i - 1])) {
            let (word, end) = ident_at(chars, i);
            if word == "mod" {
                let name_at = skip_ws(chars, end);
                if chars.get(name_at).is_some_and(|c| is_ident_start(*c)) {
                    let (_, name_end) = ident_at(chars, name_at);
                    let open = skip_ws(chars, name_end);
                    if chars.get(open) == Some(&'{') {
                        let mut depth = 0;
                        let mut close = open;
                        for (k, c) in chars.iter().enumerate().skip(open) {
                            match c {
                                '{' => depth += 1,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            if depth == 0 {
                                close = k;
                                break;
                            }
                        }
                        spans.push((open, close));
                    }
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    spans
}

/// `crate::{a, b::{c, d as e}, f::*}` -> `[crate, a]`, `[crate, b, c]`, `[crate, b, d]`,
/// `[crate, f]`. A `self` inside a group names the group's prefix.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    fn walk(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        let tree = tree.strip_prefix("::").unwrap_or(tree);
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = segments(&tree[..open]);
            let close = tree.rfind('}').unwrap_or(tree.len());
            let inner = &tree[open + 1..close];
            let base: Vec<String> = prefix.iter().cloned().chain(head).collect();
            for item in split_top_level(inner) {
                walk(item, &base, out);
            }
            return;
        }
        let tree = tree.split(" as ").next().unwrap_or(tree);
        let mut path: Vec<String> = prefix.to_vec();
        for seg in segments(tree) {
            if seg == "self" && !path.is_empty() {
                continue;
            }
            path.push(seg);
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    fn segments(s: &str) -> Vec<String> {
        s.split("::")
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "*")
            .map(str::to_string)
            .collect()
    }
    fn split_top_level(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut depth, mut from) = (0, 0);
        for (k, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[from..k]);
                    from = k + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[from..]);
        parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
    }
    // `pub use`, `pub(crate) use` were cut before `use`; attributes cannot sit inside.
    let mut out = Vec::new();
    walk(tree, &[], &mut out);
    out
}

/// The code with comments (doc comments too) and string/char literals blanked out, so that a
/// path in prose or in a message is not an import. Lifetimes are kept.
fn strip_comments_and_strings(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            'r' if (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#'))
                && (i == 0 || !is_ident_char(c[i - 1])) =>
            {
                // Raw string: r"..", r#".."#.
                let hashes = c[i + 1..].iter().take_while(|ch| **ch == '#').count();
                if c.get(i + 1 + hashes) != Some(&'"') {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                i += 2 + hashes;
                while i < c.len() {
                    if c[i] == '"'
                        && c[i + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|h| **h == '#')
                            .count()
                            == hashes
                    {
                        i += 1 + hashes;
                        break;
                    }
                    i += 1;
                }
                out.push_str("\"\"");
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a): keep lifetimes.
                if c.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                    out.push_str("' '");
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

/// Every circle in the graph: one per strongly connected set of files, as a closed walk.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph.keys().collect();
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        // The files on a circle with `n`; walk the shortest way round.
        let set: BTreeSet<&String> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[*m].contains(*n))
            .copied()
            .collect();
        done.extend(set.iter().map(|s| (*s).clone()));
        out.push(shortest_circle(graph, n));
    }
    out
}

/// The shortest closed walk from `start` back to it (breadth first).
fn shortest_circle(graph: &Graph, start: &str) -> Vec<String> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut frontier = vec![start.to_string()];
    while !frontier.is_empty() {
        let mut next_frontier = Vec::new();
        for n in frontier {
            for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    let mut walk = vec![start.to_string(), n.clone()];
                    let mut at = n;
                    while let Some(prev) = came_from.get(&at) {
                        walk.push(prev.clone());
                        at = prev.clone();
                    }
                    walk.reverse();
                    return walk;
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next.clone(), n.clone());
                    next_frontier.push(next.clone());
                }
            }
        }
        frontier = next_frontier;
    }
    vec![start.to_string(), start.to_string()]
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident_at(chars: &[char], from: usize) -> (String, usize) {
    let end = chars[from..]
        .iter()
        .position(|c| !is_ident_char(*c))
        .map_or(chars.len(), |n| from + n);
    (chars[from..end].iter().collect(), end)
}

fn skip_ws(chars: &[char], from: usize) -> usize {
    chars[from..]
        .iter()
        .position(|c| !c.is_whitespace())
        .map_or(chars.len(), |n| from + n)
}

// The checker itself, on small made-up trees.

fn file(name: &str, module: &[&str], code: &str) -> SourceFile {
    SourceFile {
        name: name.into(),
        module: module.iter().map(|s| s.to_string()).collect(),
        code: strip_comments_and_strings(code),
    }
}

fn edges(graph: &Graph, from: &str) -> Vec<String> {
    graph[from].keys().cloned().collect()
}

#[test]
fn use_groups_super_self_and_inline_paths_are_edges() {
    let files = [
        file("lib.rs", &[], "pub mod a; pub mod b; fn f() { a::go(); }"),
        file("a.rs", &["a"], "use crate::{b::{self, X as Y}, c::*};"),
        file("b.rs", &["b"], "fn f() -> crate::d::Z { todo!() }"),
        file("c/mod.rs", &["c"], "mod e; pub use e::E; pub(crate) use self::e::F;"),
        file(
            "c/e.rs",
            &["c", "e"],
            "use super::super::d; mod tests { use super::*; use super::super::super::b; }",
        ),
        file("d.rs", &["d"], "// use crate::a;\nconst S: &str = \"crate::a::x\"; fn g<'a>(_: &'a str) -> char { '\"' }"),
    ];
    let graph = import_graph(&files);
    assert_eq!(edges(&graph, "lib.rs"), ["a.rs"]);
    assert_eq!(edges(&graph, "a.rs"), ["b.rs", "c/mod.rs"]);
    assert_eq!(edges(&graph, "b.rs"), ["d.rs"]);
    assert_eq!(edges(&graph, "c/mod.rs"), ["c/e.rs"]);
    assert_eq!(edges(&graph, "c/e.rs"), ["b.rs", "d.rs"]);
    assert!(
        edges(&graph, "d.rs").is_empty(),
        "comments and strings are not imports"
    );
    assert!(circles(&graph).is_empty());
}

#[test]
fn a_circle_through_three_files_is_found() {
    let files = [
        file("lib.rs", &[], ""),
        file("udp.rs", &["udp"], "use crate::sfu::room::Batch;"),
        file("sfu/mod.rs", &["sfu"], "pub mod room;"),
        file(
            "sfu/room.rs",
            &["sfu", "room"],
            "fn f(_: super::super::node::Node) {}",
        ),
        file("node.rs", &["node"], "fn f() { crate::udp::bind(); }"),
    ];
    let graph = import_graph(&files);
    let found = circles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 4, "{found:?}");
    assert_eq!(found[0].first(), found[0].last());
}
