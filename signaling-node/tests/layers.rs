//! Layers that point one way: no import circle between the files of `signaling-node/src`.
//!
//! Reads every `.rs` file under `src/` (the binary's `main.rs` excepted: it is its own crate
//! and reaches the library only by name), collects the module paths each one names —
//! `use crate::...` (grouped trees included), `use super::...`, `use self::...`, `use child::...`
//! for a `mod child;` it declares, and inline `crate::x::`, `super::x::`, `self::x::` paths —
//! resolves each to the file that defines that module, and fails on any cycle in the
//! resulting file graph, printing it. A `super::` inside an inline `mod tests { ... }` stays
//! in its file. Comments and string literals are skipped.
//!
//! Self-contained on purpose (no parser crate): the layering is a text property of the tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file of the crate: its module path from the crate root, and its text.
struct SourceFile {
    module: Vec<String>,
    /// Display name relative to `src/`.
    name: String,
    text: String,
}

/// The crate's library files under `src`.
fn read_sources(src: &Path) -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(src).expect("under src").to_path_buf();
                if rel == Path::new("main.rs") || rel.starts_with("bin") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("readable source");
                files.push(SourceFile {
                    module: module_of(&rel),
                    name: rel.display().to_string(),
                    text,
                });
            }
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// `lib.rs` -> [], `a.rs` -> [a], `a/mod.rs` -> [a], `a/b.rs` -> [a, b].
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (stem == "lib" && parts.is_empty())) {
        parts.push(stem.to_string());
    }
    parts
}

/// The text with comments and string/char literals blanked out (newlines kept).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        // Line comment.
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // Block comment (nested).
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
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
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            out.push(' ');
            continue;
        }
        // Raw string: r"..", r#".."#, br"..".
        let prev_ident = i > 0 && ident(c[i - 1]);
        if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) {
            let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    if c[j] == '\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        // String.
        if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                } else if c[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
            continue;
        }
        // Char literal ('x', '\n', '\u{..}'); a lifetime ('a) is kept.
        if c[i] == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
                continue;
            }
            if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// A path named by a file: where it starts and its segments after that start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// `crate::a::b`.
    Crate(Vec<String>),
    /// `super::...` seen `inline_depth` inline modules deep, with `ups` supers.
    Super {
        ups: usize,
        inline_depth: usize,
        rest: Vec<String>,
    },
    /// `self::a` or `a::...` for a declared `mod a;` (only at file level).
    Child(Vec<String>),
}

/// Expand a `use` tree (`a::{b, c::{d, e}}`) into full paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        let s = s.trim();
        if s.is_empty() {
            return;
        }
        // Split off the leading `seg::seg::` run up to a brace or the end.
        if let Some(open) = s.find('{') {
            let head = s[..open].trim().trim_end_matches("::");
            let close = s.rfind('}').expect("balanced use tree");
            let inner = &s[open + 1..close];
            let mut base = prefix.to_vec();
            base.extend(segments(head));
            for part in split_top(inner) {
                go(&base, part, out);
            }
        } else {
            let head = s.split(" as ").next().unwrap_or(s);
            let mut path = prefix.to_vec();
            path.extend(segments(head));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

fn segments(s: &str) -> Vec<String> {
    s.split("::")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Split on commas that are not inside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, ch) in s.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Every module path `text` (already stripped) names.
fn named_paths(text: &str) -> Vec<Named> {
    let bytes: Vec<char> = text.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let word_at = |i: usize, w: &str| {
        let wc: Vec<char> = w.chars().collect();
        bytes.len() >= i + wc.len()
            && bytes[i..i + wc.len()] == wc[..]
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + wc.len()).is_none_or(|&c| !ident(c))
    };
    let read_ident = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        (bytes[start..i].iter().collect::<String>(), i)
    };
    // Pass 1: child modules declared at file level (`mod x;`).
    let mut children = BTreeSet::new();
    // Inline module stack: brace depth at which each inline `mod x {` opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut named = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let ch = bytes[i];
        if ch == '{' {
            depth += 1;
            i += 1;
            continue;
        }
        if ch == '}' {
            depth = depth.saturating_sub(1);
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        if word_at(i, "mod") {
            let (name, mut j) = read_ident(i + 3);
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            match bytes.get(j) {
                Some(';') if inline.is_empty() => {
                    children.insert(name);
                }
                Some('{') => inline.push(depth),
                _ => {}
            }
            i = j;
            continue;
        }
        if word_at(i, "use") {
            let end = (i..bytes.len())
                .find(|&k| bytes[k] == ';')
                .unwrap_or(bytes.len());
            let tree: String = bytes[i + 3..end].iter().collect();
            for path in expand_use(&tree) {
                if let Some(n) = classify(&path, inline.len(), &children) {
                    named.push(n);
                }
            }
            i = end;
            continue;
        }
        // Inline paths: `crate::`, `super::`, `self::` not preceded by an identifier or `::`.
        let starts_path = (i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == ':'))
            && ["crate", "super", "self"].iter().any(|w| word_at(i, w));
        if starts_path {
            let mut j = i;
            let mut path = String::new();
            loop {
                let (seg, k) = read_ident(j);
                if seg.is_empty() {
                    break;
                }
                path.push_str(&seg);
                if bytes.get(k) == Some(&':') && bytes.get(k + 1) == Some(&':') {
                    path.push_str("::");
                    j = k + 2;
                } else {
                    j = k;
                    break;
                }
            }
            if path.contains("::") {
                if let Some(n) = classify(&segments(&path), inline.len(), &BTreeSet::new()) {
                    named.push(n);
                }
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    named
}

fn classify(path: &[String], inline_depth: usize, children: &BTreeSet<String>) -> Option<Named> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(Named::Crate(path[1..].to_vec())),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            Some(Named::Super {
                ups,
                inline_depth,
                rest: path[ups..].to_vec(),
            })
        }
        "self" if inline_depth == 0 => Some(Named::Child(path[1..].to_vec())),
        name if inline_depth == 0 && children.contains(name) => Some(Named::Child(path.to_vec())),
        _ => None,
    }
}

/// The file-level import graph: file name -> names of the files it imports.
fn graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<&[String], &str> = files
        .iter()
        .map(|f| (f.module.as_slice(), f.name.as_str()))
        .collect();
    // The file defining the longest module prefix of `path`.
    let resolve = |path: &[String]| -> Option<String> {
        (0..=path.len())
            .rev()
            .find_map(|n| by_module.get(&path[..n]).map(|s| s.to_string()))
    };
    let mut edges = BTreeMap::new();
    for f in files {
        let mut to = BTreeSet::new();
        for named in named_paths(&strip(&f.text)) {
            let target = match named {
                Named::Crate(rest) => rest,
                Named::Super {
                    ups,
                    inline_depth,
                    rest,
                } => {
                    if ups <= inline_depth {
                        continue; // Inside this file.
                    }
                    let up = ups - inline_depth;
                    if up > f.module.len() {
                        continue;
                    }
                    let mut p = f.module[..f.module.len() - up].to_vec();
                    p.extend(rest);
                    p
                }
                Named::Child(rest) => {
                    let mut p = f.module.clone();
                    p.extend(rest);
                    p
                }
            };
            if let Some(file) = resolve(&target) {
                if file != f.name {
                    to.insert(file);
                }
            }
        }
        edges.insert(f.name.clone(), to);
    }
    edges
}

/// Every cycle found by a depth-first search (one per back edge), as file names.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::New => visit(next, edges, marks, stack, found),
                Mark::Open => {
                    let start = stack.iter().position(|s| s == next).expect("on stack");
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for node in edges.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_import_circle_in_src() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_sources(&src);
    assert!(files.len() > 5, "found the sources under {src:?}");
    let edges = graph(&files);
    let mut imports = String::from("imports by file:\n");
    for (file, to) in &edges {
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        imports.push_str(&format!("  {file} -> {}\n", to.join(", ")));
    }
    println!("{imports}"); // Shown with `--nocapture`.
    let found = cycles(&edges);
    if !found.is_empty() {
        let mut report = String::from("import circles in signaling-node/src:\n");
        for cycle in &found {
            report.push_str(&format!("  {}\n", cycle.join(" -> ")));
        }
        panic!("{report}\n{imports}");
    }
}

/// The reader itself: each form of path it must see, and what it must not.
#[test]
fn the_reader_sees_every_form_of_import() {
    let file = |name: &str, text: &str| SourceFile {
        module: module_of(Path::new(name)),
        name: name.into(),
        text: text.into(),
    };
    let files = vec![
        file("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e;"),
        // Grouped use tree with a nested group and a rename.
        file(
            "a.rs",
            "use crate::{b::{X, Y as Z}, c};\n// use crate::e::Nope;\nconst S: &str = \"crate::e::Nope\";",
        ),
        // Inline path in an expression.
        file("b.rs", "fn f() { crate::d::go(); let _c = '\"'; }"),
        // A folder module: child via `mod`, `self::`, and a child using `super::`.
        file("c/mod.rs", "mod inner;\nuse inner::Q;\nuse self::inner::R;"),
        file(
            "c/inner.rs",
            "use super::super::e::W;\n#[cfg(test)]\nmod tests { use super::*; }",
        ),
        file("d.rs", "fn g() -> super::e::T { todo!() }"),
        file("e.rs", "/* crate::a::Nope */ fn h<'a>(x: &'a str) {}"),
    ];
    let edges = graph(&files);
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(edges["a.rs"], set(&["b.rs", "c/mod.rs"]));
    assert_eq!(edges["b.rs"], set(&["d.rs"]));
    assert_eq!(edges["c/mod.rs"], set(&["c/inner.rs"]));
    assert_eq!(edges["c/inner.rs"], set(&["e.rs"]));
    assert_eq!(edges["d.rs"], set(&["e.rs"]));
    assert!(edges["e.rs"].is_empty());
    assert!(cycles(&edges).is_empty());
    // A circle through three files is found and named.
    let files = vec![
        file("lib.rs", ""),
        file("a.rs", "use crate::b::X;"),
        file("b.rs", "use crate::c::Y;"),
        file("c.rs", "fn f() { crate::a::go() }"),
    ];
    let found = cycles(&graph(&files));
    assert_eq!(found, vec![vec!["a.rs", "b.rs", "c.rs", "a.rs"]]);
}
