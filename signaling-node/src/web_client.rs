//! The web client (`signaling-node/static/`), embedded in the binary as one table: every
//! file with its content type. `GET /` is `index.html`, `GET /<path>` is `static/<path>`.
//! Only paths in [`FILES`] are served, matched exactly against the request's raw path: no
//! file system access, no decoding, so nothing outside the table can be reached.
//!
//! A new file in `static/` needs a line in [`FILES`]: `tests/it/web_client.rs` lists the
//! directory and fails for any file the running server does not serve with its type.
//!
//! Every file goes out with [`SECURITY_HEADERS`]: a Content-Security-Policy that lets the page
//! run only its own files and talk only to its own origin, and no framing by other sites.

use actix_web::{HttpRequest, HttpResponse};

/// One file of the web client.
pub struct StaticFile {
    /// Path under `static/`, `/`-separated, without a leading slash.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
/// ES modules must be served with a JavaScript type, or the browser refuses to run them.
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const PNG: &str = "image/png";

/// An entry of [`FILES`]: the path is written once, for the table and for `include_bytes!`.
macro_rules! embed {
    ($path:literal, $content_type:expr) => {
        StaticFile {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../static/", $path)),
        }
    };
}

/// Everything in `static/`.
pub const FILES: &[StaticFile] = &[
    embed!("index.html", HTML),
    embed!("style.css", CSS),
    embed!("js/main.js", JS),
    embed!("js/state.js", JS),
    embed!("js/ui.js", JS),
    embed!("js/protocol.js", JS),
    embed!("js/media.js", JS),
    embed!("js/session.js", JS),
    embed!("js/errors.js", JS),
    embed!("js/sounds.js", JS),
    embed!("js/devices.js", JS),
    embed!("js/controls.js", JS),
];

/// The page's Content-Security-Policy. The client is ES modules and a stylesheet from this
/// origin, with no inline script or style attribute, so nothing inline is allowed:
/// - `script-src 'self'`, `style-src 'self'`: only our own files run (an injected
///   `<script>` or `onerror=` does not);
/// - `connect-src 'self'`: `fetch('/dev/token')` and the WebSocket to the same host and
///   port (CSP 3 lets `'self'` match `ws:`/`wss:` of the page's own host);
/// - `img-src 'self' data:`: the empty `data:,` favicon; `media-src 'self'`: the videos play
///   `MediaStream`s (`srcObject`), which no fetch directive governs;
/// - `frame-ancestors 'none'`: no other site frames the call page (clickjacking the
///   camera/microphone buttons); `base-uri`, `form-action` and `object-src` closed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; media-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Sent with every file of the web client. `X-Frame-Options` is `frame-ancestors` for
/// browsers older than CSP 2; `nosniff` keeps a browser from running a file as another type;
/// `no-referrer` because a page URL may carry an access token (`?token=`).
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
];

/// The content type for a file name's extension; `None` for a type the client does not use.
pub fn content_type_for(path: &str) -> Option<&'static str> {
    match path.rsplit_once('.')?.1 {
        "html" => Some(HTML),
        "js" => Some(JS),
        "css" => Some(CSS),
        "svg" => Some(SVG),
        "png" => Some(PNG),
        _ => None,
    }
}

/// The file a request path names (`/` is `index.html`), if the table has it.
pub fn lookup(request_path: &str) -> Option<&'static StaticFile> {
    let path = request_path.strip_prefix('/')?;
    let path = if path.is_empty() { "index.html" } else { path };
    FILES.iter().find(|f| f.path == path)
}

/// `GET /{path:.*}`: register it after every other GET route, which it would otherwise shadow.
pub async fn serve(req: HttpRequest) -> HttpResponse {
    match lookup(req.path()) {
        Some(file) => {
            let mut res = HttpResponse::Ok();
            res.content_type(file.content_type)
                .insert_header(("Cache-Control", "no-cache"));
            for header in SECURITY_HEADERS {
                res.insert_header(header);
            }
            res.body(file.body)
        }
        None => HttpResponse::NotFound().finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_has_the_content_type_of_its_extension() {
        for f in FILES {
            assert_eq!(
                Some(f.content_type),
                content_type_for(f.path),
                "{} is served as {}",
                f.path,
                f.content_type
            );
        }
    }

    #[test]
    fn paths_are_unique_and_relative() {
        let mut seen = std::collections::HashSet::new();
        for f in FILES {
            assert!(seen.insert(f.path), "{} listed twice", f.path);
            assert!(
                !f.path.starts_with('/') && !f.path.split('/').any(|s| s.is_empty() || s == ".."),
                "{} is not a plain relative path",
                f.path
            );
        }
    }

    #[test]
    fn lookup_serves_only_the_table() {
        assert_eq!(lookup("/").map(|f| f.path), Some("index.html"));
        assert_eq!(lookup("/index.html").map(|f| f.path), Some("index.html"));
        assert_eq!(lookup("/js/main.js").map(|f| f.path), Some("js/main.js"));
        for path in [
            "",
            "/nope.js",
            "/js",
            "/js/",
            "//index.html",
            "/../Cargo.toml",
            "/js/../index.html",
            "/%2e%2e/Cargo.toml",
            "/static/index.html",
            "/src/web_client.rs",
        ] {
            assert!(lookup(path).is_none(), "{path:?} must not be served");
        }
    }
}
