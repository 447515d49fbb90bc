//! Import circles between the files of a crate's `src/` (feature `test-support`), for each
//! crate's `tests/layers.rs`: layers point one way.
//!
//! Reads every `.rs` file under `src/` except `main.rs` and `bin/` (crates of their own),
//! collects the module paths each one names — `use` trees (groups, `self`, renames, globs) and
//! inline paths starting with `crate::`, `super::`, `self::` or a child module's name — with
//! comments and string literals blanked out, resolves each to the file defining the longest
//! module prefix, and reports the circles in that file graph with the paths making each step.
//! `mod x;` is containment, not an import; a `super::` inside an inline `mod tests { .. }`
//! stays in its file. Plain text scanning on purpose (no parser crate).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

/// Panics listing every import circle between the files under `src_dir`.
pub fn assert_no_import_cycles(src_dir: &Path) {
    let cycles = import_cycles(src_dir);
    assert!(
        cycles.is_empty(),
        "import circles in {}: a lower layer must not name a higher one \
         (talk up through a Recipient<M> or plain data)\n{}",
        src_dir.display(),
        cycles.join("\n")
    );
}

/// One entry per circle (the shortest through each file on one, unless already shown):
/// `import circle: a.rs -> b.rs -> a.rs`, then a line per step with the paths making it.
pub fn import_cycles(src_dir: &Path) -> Vec<String> {
    let files = read_tree(src_dir);
    assert!(!files.is_empty(), "no .rs files under {src_dir:?}");
    let graph = import_graph(&files);
    let mut circles: Vec<_> = (graph.keys())
        .filter_map(|s| shortest_circle(&graph, s))
        .collect();
    circles.sort_by_key(Vec::len); // The most direct first, then those through other files.
    let (mut out, mut covered) = (Vec::new(), BTreeSet::new());
    for circle in circles {
        if covered.insert(circle[0]) {
            let mut text = format!("import circle: {}", circle.join(" -> "));
            for step in circle.windows(2) {
                let via: Vec<&str> = graph[step[0]][step[1]].iter().map(|s| &s[..]).collect();
                text += &format!("\n  {} -> {} via {}", step[0], step[1], via.join(", "));
            }
            covered.extend(circle);
            out.push(text);
        }
    }
    out
}

/// Each library file: its name under `src/`, its module path (`[]` for `lib.rs`, `[a, b]` for
/// `a/b.rs` or `a/b/mod.rs`), and its text with comments and strings blanked out.
fn read_tree(src: &Path) -> Vec<(String, Vec<String>, String)> {
    let (mut files, mut dirs) = (Vec::new(), vec![src.to_path_buf()]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(src).expect("under src");
            let name = rel.to_string_lossy().replace('\\', "/");
            if path.is_dir() && name != "bin" {
                dirs.push(path);
            } else if let Some(stem) = name.strip_suffix(".rs").filter(|s| *s != "main") {
                let mut module: Vec<String> = stem.split('/').map(String::from).collect();
                if stem == "lib" || stem.ends_with("/mod") {
                    module.pop();
                }
                let code = strip(&std::fs::read_to_string(&path).expect("a UTF-8 file"));
                files.push((name, module, code));
            }
        }
    }
    files.sort();
    files
}

/// file -> file it names -> the paths naming it.
type Graph<'a> = BTreeMap<&'a str, BTreeMap<&'a str, BTreeSet<String>>>;

fn import_graph(files: &[(String, Vec<String>, String)]) -> Graph<'_> {
    let by_module: BTreeMap<&[String], &str> = files.iter().map(|f| (&f.1[..], &f.0[..])).collect();
    let mut graph = Graph::new();
    for (name, module, code) in files {
        let children: BTreeSet<&str> = (by_module.keys())
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].as_str())
            .collect();
        let edges = graph.entry(&name[..]).or_default();
        for (path, inline) in module_paths(code) {
            let Some(abs) = absolute(&path, module, inline, &children) else {
                continue;
            };
            // The file defining the longest module prefix of the path.
            let target = (0..=abs.len()).rev().find_map(|n| by_module.get(&abs[..n]));
            if let Some(&target) = target.filter(|t| *t != name) {
                edges.entry(target).or_default().insert(path.join("::"));
            }
        }
    }
    graph
}

/// `path`, named `inline` inline modules deep in the file of `module`, from the crate root;
/// `None` if it leaves the crate (`std::`, other crates, locals) or stays in the file.
fn absolute(
    path: &[String],
    module: &[String],
    inline: usize,
    children: &BTreeSet<&str>,
) -> Option<Vec<String>> {
    let from = |base: &[String], skip: usize| base.iter().chain(&path[skip..]).cloned().collect();
    match path[0].as_str() {
        "crate" => Some(path[1..].to_vec()),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let up = ups.checked_sub(inline).filter(|up| *up > 0)?;
            Some(from(&module[..module.len().checked_sub(up)?], ups))
        }
        "self" if inline == 0 => Some(from(module, 1)),
        child if inline == 0 && children.contains(child) => Some(from(module, 0)),
        _ => None,
    }
}

/// Every path of two or more segments in `code` (`use` trees expanded, and inline
/// `a::b::c`), with how many inline modules deep it is named.
fn module_paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let c: Vec<char> = code.chars().collect();
    let (mut out, mut inline, mut depth, mut i) = (Vec::new(), Vec::new(), 0usize, 0);
    while i < c.len() {
        match c[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop(); // An inline `mod x { .. }` closes.
                }
            }
            ch if is_ident(ch) && (i == 0 || !is_ident(c[i - 1])) => {
                let (word, end) = ident_at(&c, i);
                if word == "use" {
                    let semi = find(&c, end, |ch| ch == ';');
                    let tree: String = c[end..semi].iter().collect();
                    for path in expand_use(&tree, &[]) {
                        out.push((path, inline.len()));
                    }
                    i = semi + 1;
                    continue;
                }
                let name_end = ident_at(&c, end).1;
                if word == "mod"
                    && c.get(find(&c, name_end, |ch| !ch.is_whitespace())) == Some(&'{')
                {
                    inline.push(depth);
                }
                let (mut path, mut at) = (vec![word], end);
                while c.get(at) == Some(&':') && c.get(at + 1) == Some(&':') {
                    let (segment, segment_end) = ident_at(&c, at + 2);
                    if segment.is_empty() {
                        break; // `x::<T>`, `x::{..}` outside a `use`.
                    }
                    (at, _) = (segment_end, path.push(segment));
                }
                if path.len() > 1 {
                    out.push((path, inline.len()));
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// `crate::{a, b::{self, c as d}, e::*}` -> `crate::a`, `crate::b`, `crate::b::c`, `crate::e`.
fn expand_use(tree: &str, prefix: &[String]) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let (head, group) = match tree.find('{') {
        Some(open) => (
            &tree[..open],
            &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())],
        ),
        None => (tree.split_whitespace().next().unwrap_or(""), ""), // Drops `as x`.
    };
    let mut path = prefix.to_vec();
    for segment in head.split("::").map(str::trim) {
        if !["", "*", "self"].contains(&segment) || segment == "self" && path.is_empty() {
            path.push(segment.to_string());
        }
    }
    if !tree.contains('{') {
        return vec![path].into_iter().filter(|p| !p.is_empty()).collect();
    }
    let (mut level, mut from, mut out) = (0, 0, Vec::new());
    for (k, ch) in group.char_indices().chain([(group.len(), ',')]) {
        match ch {
            '{' => level += 1,
            '}' => level -= 1,
            ',' if level == 0 => {
                if !group[from..k].trim().is_empty() {
                    out.extend(expand_use(&group[from..k], &path));
                }
                from = k + 1;
            }
            _ => {}
        }
    }
    out
}

/// The text with comments, strings and char literals blanked out (line breaks and lifetimes
/// kept), so that a path in prose or in a message is not an import.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |k: usize| c.get(k).copied().unwrap_or(' ');
    let (mut out, mut i) = (String::with_capacity(text.len()), 0);
    while i < c.len() {
        let from = i;
        i = match (c[i], at(i + 1), at(i + 2)) {
            ('/', '/', _) => find(&c, i, |ch| ch == '\n'),
            ('/', '*', _) => comment_end(&c, i),
            ('\'', '\\', _) => find(&c, i + 3, |ch| ch == '\'') + 1, // '\n', '\'', '\u{..}'
            ('\'', _, '\'') => i + 3,                                // 'x'; not a lifetime 'a
            _ => string_end(&c, i).unwrap_or(i),
        };
        if i == from {
            (i, _) = (i + 1, out.push(c[i]));
        } else {
            out.push(' ');
            out.extend(c[from..i.min(c.len())].iter().filter(|ch| **ch == '\n'));
        }
    }
    out
}

/// The end of the (nested) block comment starting at `i`.
fn comment_end(c: &[char], mut i: usize) -> usize {
    let mut level = 0;
    while i < c.len() {
        match (c[i], c.get(i + 1)) {
            ('*', Some('/')) if level == 1 => return i + 2,
            ('*', Some('/')) => (level, i) = (level - 1, i + 2),
            ('/', Some('*')) => (level, i) = (level + 1, i + 2),
            _ => i += 1,
        }
    }
    i
}

/// The end of the string literal (`".."`, `b".."`, `r#".."#`, `br".."`) starting at `i`, if any.
fn string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = i + usize::from(c[i] == 'b');
    let raw = c.get(j) == Some(&'r');
    j += usize::from(raw);
    let hashes = find(c, j, |ch| ch != '#') - j;
    j += hashes;
    if c.get(j) != Some(&'"') || j > i && i > 0 && is_ident(c[i - 1]) {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '\\' && !raw {
            j += 1;
        } else if c[j] == '"' && (1..=hashes).all(|k| c.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// The shortest walk from `start` back to it (breadth first), if there is one.
fn shortest_circle<'a>(graph: &Graph<'a>, start: &'a str) -> Option<Vec<&'a str>> {
    let (mut came_from, mut queue) = (BTreeMap::new(), VecDeque::from([start]));
    while let Some(node) = queue.pop_front() {
        for &next in graph[node].keys() {
            if next == start {
                let mut walk = vec![start, node];
                while let Some(&prev) = came_from.get(walk[walk.len() - 1]) {
                    walk.push(prev);
                }
                walk.reverse();
                return Some(walk);
            }
            if !came_from.contains_key(next) {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The first index from `from` where `hit` holds, or the end.
fn find(c: &[char], from: usize, hit: impl Fn(char) -> bool) -> usize {
    let from = from.min(c.len());
    from + c[from..].iter().take_while(|&&ch| !hit(ch)).count()
}

/// The identifier at `from` (after any whitespace), and where it ends.
fn ident_at(c: &[char], from: usize) -> (String, usize) {
    let start = find(c, from, |ch| !ch.is_whitespace());
    let end = find(c, start, |ch| !is_ident(ch));
    (c[start..end].iter().collect(), end)
}

fn is_ident(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a made-up `src/` tree, given as `@@ path` lines each followed by that file's text.
    fn tree(name: &str, spec: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("conclave-layers-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for file in spec.split("@@ ").skip(1) {
            let (path, text) = file.split_once('\n').unwrap();
            let path = dir.join(path.trim());
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn every_form_of_path_is_an_edge_and_prose_is_not() {
        let dir = tree(
            "forms",
            r##"
@@ lib.rs
pub mod a; pub mod b; pub mod c; pub mod d;
fn f() { a::go(); }
@@ main.rs
use crate::a;
@@ a.rs
use crate::{
    b::{self, X as Y},
    c::*,
};
@@ b.rs
// use crate::a;
/* crate::a::X /* nested */ crate::c */
const S: &str = "crate::a::x \" crate::c";
const R: &str = r#"use crate::a; "#;
fn g<'a>(_: &'a str) -> [char; 3] { ['"', '\'', '\u{7b}'] }
fn h() -> crate::d::Z { crate::d::Z }
@@ c/mod.rs
mod e;
pub use e::E;
pub(crate) use self::e::F;
@@ c/e.rs
use super::super::d;
#[cfg(test)]
mod tests {
    use super::*;
    fn f() -> char { '}' }
    mod deeper { use super::super::Q; }
    fn g() { self::x::y(); }
}
@@ d.rs
pub struct Z;
"##,
        );
        let files = read_tree(&dir);
        let graph = import_graph(&files);
        let edges = |from: &str| graph[from].keys().copied().collect::<Vec<_>>();
        assert_eq!(edges("lib.rs"), ["a.rs"]);
        assert_eq!(edges("a.rs"), ["b.rs", "c/mod.rs"], "a grouped use tree");
        assert_eq!(
            edges("b.rs"),
            ["d.rs"],
            "comments, strings and chars name nothing"
        );
        assert_eq!(edges("c/mod.rs"), ["c/e.rs"], "child modules");
        assert_eq!(
            edges("c/e.rs"),
            ["d.rs"],
            "super:: in inline mods stays in the file"
        );
        assert!(edges("d.rs").is_empty() && !graph.contains_key("main.rs"));
        assert_eq!(import_cycles(&dir), Vec::<String>::new());
    }

    #[test]
    fn two_and_three_file_circles_are_found_with_their_paths() {
        let dir = tree(
            "circles",
            r"
@@ lib.rs
pub mod a; pub mod b; pub mod node; pub mod sfu; pub mod udp;
@@ a.rs
use crate::b::{X, Y};
@@ b.rs
fn f() { crate::a::go() }
@@ udp.rs
use crate::sfu::room::Batch;
@@ sfu/mod.rs
pub mod room;
@@ sfu/room.rs
fn f(_: super::super::node::Node) {}
@@ node.rs
fn f() { crate::udp::bind(); }
",
        );
        let found = import_cycles(&dir);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0],
            "import circle: a.rs -> b.rs -> a.rs\n  a.rs -> b.rs via crate::b::X, crate::b::Y\n  \
             b.rs -> a.rs via crate::a::go"
        );
        let three = "node.rs -> udp.rs -> sfu/room.rs -> node.rs";
        assert!(
            found[1].starts_with(&format!("import circle: {three}\n")),
            "{}",
            found[1]
        );
        assert!(found[1].contains("sfu/room.rs -> node.rs via super::super::node::Node"));
        let panic = std::panic::catch_unwind(|| assert_no_import_cycles(&dir)).unwrap_err();
        assert!(panic.downcast_ref::<String>().unwrap().contains(three));
    }
}
