//! The web client as the running server serves it: every file under `static/` (listed at
//! test time, so a file missing from `web_client::FILES` fails here) at its path, with the
//! content type of its extension and the file's exact bytes. This checks the server's
//! embedded table itself; the browser tests' E2E_STATIC_DIR overlay serves from disk and
//! would hide a missing entry.

use std::path::{Path, PathBuf};

use crate::support::{start, Options};

/// Every file under `dir`, as `/`-separated paths relative to `root`.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("static/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap();
            let parts: Vec<_> = rel
                .iter()
                .map(|p| p.to_str().expect("UTF-8 name"))
                .collect();
            out.push(parts.join("/"));
        }
    }
}

/// What a browser needs for each extension (written out here, not taken from the server's
/// table, so a wrong type there fails).
fn expected_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => panic!("static/{path}: unknown extension (add its type here and in web_client.rs)"),
    }
}

async fn get(url: &str) -> (u16, Option<String>, Option<String>, Vec<u8>) {
    let mut res = awc::Client::new().get(url).send().await.expect("answers");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (ctype, cache) = (header("content-type"), header("cache-control"));
    let body = res.body().limit(16 << 20).await.expect("body");
    (res.status().as_u16(), ctype, cache, body.to_vec())
}

#[actix_rt::test]
async fn every_file_in_static_is_served_with_its_content_type() {
    let server = start(Options::default());
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut files = Vec::new();
    files_under(&root, &root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f == "index.html") && files.iter().any(|f| f.ends_with(".js")),
        "static/ looks wrong: {files:?}"
    );
    for rel in &files {
        let (status, ctype, cache, body) = get(&format!("{}/{rel}", server.base)).await;
        assert_eq!(
            status, 200,
            "static/{rel} is not served: add it to FILES in signaling-node/src/web_client.rs"
        );
        assert_eq!(ctype.as_deref(), Some(expected_type(rel)), "static/{rel}");
        assert_eq!(cache.as_deref(), Some("no-cache"), "static/{rel}");
        let on_disk = std::fs::read(root.join(rel)).unwrap();
        assert!(
            body == on_disk,
            "static/{rel}: served bytes differ from the file"
        );
    }
    // The page itself at `/`.
    let (status, ctype, _, body) = get(&format!("{}/", server.base)).await;
    assert_eq!(
        (status, ctype.as_deref()),
        (200, Some("text/html; charset=utf-8"))
    );
    assert!(body == std::fs::read(root.join("index.html")).unwrap());
}

#[actix_rt::test]
async fn paths_outside_the_table_are_not_found() {
    let server = start(Options::default());
    for path in [
        "/nope.js",
        "/app.js",
        "/js/",
        "/static/index.html",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/js/%2e%2e/%2e%2e/Cargo.toml",
        "/src/web_client.rs",
    ] {
        let (status, _, _, _) = get(&format!("{}{path}", server.base)).await;
        assert_eq!(status, 404, "{path}");
    }
}

/// The page's Content-Security-Policy as directive -> sources.
fn csp_directives(csp: &str) -> std::collections::HashMap<String, Vec<String>> {
    csp.split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace().map(str::to_string);
            Some((words.next()?.to_ascii_lowercase(), words.collect()))
        })
        .collect()
}

/// The web client is served with a CSP that runs only its own files and talks only to its
/// own origin, and with no-framing, nosniff and no-referrer headers (values written out
/// here, so a weakened policy in `web_client.rs` fails). `e2e/csp.test.js` shows the page
/// still works under it in Chromium.
#[actix_rt::test]
async fn the_web_client_is_served_with_its_security_headers() {
    let server = start(Options::default());
    for path in ["/", "/index.html", "/js/main.js", "/style.css"] {
        let res = awc::Client::new()
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("answers");
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("{path}: no {name} header"))
        };
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        let csp = header("content-security-policy");
        let d = csp_directives(&csp);
        let sources = |name: &str| {
            d.get(name)
                .unwrap_or_else(|| panic!("{path}: CSP {csp:?} has no {name}"))
                .join(" ")
        };
        assert_eq!(sources("default-src"), "'none'", "{csp}");
        assert_eq!(sources("script-src"), "'self'", "{csp}");
        assert_eq!(sources("style-src"), "'self'", "{csp}");
        assert_eq!(sources("connect-src"), "'self'", "{csp}");
        assert_eq!(sources("frame-ancestors"), "'none'", "{csp}");
        assert_eq!(sources("object-src"), "'none'", "{csp}");
        assert_eq!(sources("base-uri"), "'none'", "{csp}");
        assert!(
            !csp.contains("unsafe-") && !csp.contains('*'),
            "{path}: CSP allows inline, eval or any host: {csp}"
        );
    }
}

/// The policy allows no inline script or style, so the page must have none: no `<script>`
/// without `src`, no `style` or `on...` attributes, no `<style>` element.
#[test]
fn the_page_has_no_inline_script_or_style() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut files = Vec::new();
    files_under(&root, &root, &mut files);
    for rel in files.iter().filter(|f| f.ends_with(".html")) {
        let html = std::fs::read_to_string(root.join(rel))
            .unwrap()
            .to_ascii_lowercase();
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(
                tag.contains(" src="),
                "static/{rel}: inline <script>: {tag}"
            );
        }
        assert!(!html.contains("<style"), "static/{rel}: inline <style>");
        let attrs = html.split(|c: char| c.is_whitespace()).filter(|w| {
            w.starts_with("style=")
                || (w.starts_with("on")
                    && w.split_once('=').is_some_and(|(n, _)| {
                        n.len() > 2 && n.chars().all(|c| c.is_ascii_lowercase())
                    }))
        });
        let found: Vec<_> = attrs.collect();
        assert!(
            found.is_empty(),
            "static/{rel}: inline attributes {found:?}"
        );
    }
}
