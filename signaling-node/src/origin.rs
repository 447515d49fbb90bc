//! Which web origins may open the browser WebSocket (`/ws`): the defence against cross-site
//! WebSocket hijacking. A browser attaches its page's `Origin` to every WebSocket handshake
//! and no script can change it; the same-origin policy does not stop a foreign page from
//! opening a WebSocket, so the server has to look. Pure logic; `http.rs` refuses with 403
//! before the upgrade.
//!
//! - The bundled page is always allowed: its origin has the request's own host (`Host`).
//! - `--allowed-origins https://app.example.com,...` adds embedding apps; `*` allows any.
//! - No `Origin` at all is allowed: only non-browser clients (load generator, aiortc, native
//!   apps) omit it, and such a client could send any `Origin` it liked, so refusing it would
//!   stop nobody. The access token is what authenticates; the Origin check only keeps a
//!   foreign page from using a victim's browser (and its dev token, or a token in a link).

/// Parsed `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: every origin.
    Any,
    /// The request's own host, and these origins (normalized: lowercase, no default port).
    SameHostAnd(Vec<String>),
}

impl Default for AllowedOrigins {
    /// The request's own host only: what the bundled page needs.
    fn default() -> Self {
        AllowedOrigins::SameHostAnd(Vec::new())
    }
}

impl AllowedOrigins {
    /// From the flag's values (each `*` or `scheme://host[:port]`, http or https, no path).
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let values: Vec<&str> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        if values.contains(&"*") {
            return Ok(AllowedOrigins::Any);
        }
        let list = values
            .iter()
            .map(|v| {
                normalize(v).ok_or_else(|| {
                    format!(
                        "--allowed-origins: {v:?} is not an origin: write scheme://host[:port] \
                         (http or https, no path), or * for any"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowedOrigins::SameHostAnd(list))
    }

    /// May a WebSocket handshake with this `Origin` (`None`: absent) and `Host` go on?
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let AllowedOrigins::SameHostAnd(list) = self else {
            return true;
        };
        let Some(origin) = normalize(origin) else {
            return false; // `null` (sandboxed frames, files) or garbage.
        };
        list.contains(&origin) || host.is_some_and(|h| same_host(&origin, h))
    }
}

/// `scheme://host[:port]`, lowercase, with the scheme's default port dropped; `None` if it is
/// not an http(s) origin.
fn normalize(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let (host, port) = split_host_port(authority)?;
    let bad = |c: char| c.is_whitespace() || "/?#@\\".contains(c);
    if host.is_empty() || host.contains(bad) {
        return None;
    }
    Some(match port {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host[:port]` (IPv6 in brackets) into host and port; `None` for a malformed port.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((host, port))
}

/// Does the (normalized) origin name the host the request was sent to? The port counts when
/// `Host` carries one. A `Host` without a port comes from a default port, or from a proxy
/// that forwards only the host name (nginx `proxy_set_header Host $host`): then the host
/// name decides. The scheme is not compared: behind a TLS-terminating proxy the page is
/// https while the request reaching us is plain http.
fn same_host(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let Some((origin_host, origin_port)) = split_host_port(authority) else {
        return false;
    };
    let host = host.trim().to_ascii_lowercase();
    let Some((host_name, host_port)) = split_host_port(&host) else {
        return false;
    };
    if origin_host != host_name {
        return false;
    }
    match host_port {
        None => true,
        Some(port) => {
            let default = if scheme == "https" { "443" } else { "80" };
            origin_port.unwrap_or(default) == port
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(values: &[&str]) -> AllowedOrigins {
        AllowedOrigins::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_default_allows_the_page_of_the_same_host_only() {
        let o = AllowedOrigins::default();
        assert!(o.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(o.allows(Some("https://Meet.Example.com"), Some("meet.example.com")));
        assert!(o.allows(
            Some("https://meet.example.com"),
            Some("meet.example.com:443")
        ));
        assert!(o.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        // Behind a proxy that forwards `$host` (no port), or one that terminates TLS.
        assert!(o.allows(Some("http://127.0.0.1:18001"), Some("127.0.0.1")));
        assert!(o.allows(Some("https://meet.example.com"), Some("meet.example.com")));
        // A port in `Host` must be the origin's (its scheme's default when it has none).
        assert!(!o.allows(
            Some("https://meet.example.com"),
            Some("meet.example.com:80")
        ));
        for (origin, host) in [
            ("https://evil.example", "meet.example.com"),
            ("http://127.0.0.1:9999", "127.0.0.1:8080"),
            ("https://meet.example.com.evil.example", "meet.example.com"),
            ("null", "meet.example.com"),
            ("file://", "meet.example.com"),
            ("chrome-extension://abc", "meet.example.com"),
            ("", "meet.example.com"),
        ] {
            assert!(!o.allows(Some(origin), Some(host)), "{origin} on {host}");
        }
        assert!(!o.allows(Some("https://meet.example.com"), None));
    }

    #[test]
    fn a_missing_origin_is_a_non_browser_client_and_allowed() {
        assert!(AllowedOrigins::default().allows(None, Some("meet.example.com")));
        assert!(AllowedOrigins::default().allows(None, None));
    }

    #[test]
    fn listed_origins_are_allowed_as_well() {
        let o = list(&["https://App.example.com/", "http://localhost:3000"]);
        assert!(o.allows(Some("https://app.example.com"), Some("meet.example.com")));
        assert!(o.allows(
            Some("https://app.example.com:443"),
            Some("meet.example.com")
        ));
        assert!(o.allows(Some("http://localhost:3000"), Some("meet.example.com")));
        assert!(o.allows(Some("https://meet.example.com"), Some("meet.example.com")));
        assert!(!o.allows(Some("http://app.example.com"), Some("meet.example.com")));
        assert!(!o.allows(Some("http://localhost:3001"), Some("meet.example.com")));
    }

    #[test]
    fn a_star_allows_any_origin() {
        let o = list(&["https://a.example", "*"]);
        assert_eq!(o, AllowedOrigins::Any);
        assert!(o.allows(Some("https://evil.example"), Some("meet.example.com")));
        assert!(o.allows(Some("null"), None));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://",
            "https://a.example:http",
            "https://user@a.example",
            "null",
        ] {
            let err = AllowedOrigins::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("--allowed-origins"), "{bad}: {err}");
        }
        assert_eq!(
            AllowedOrigins::parse(&[]).unwrap(),
            AllowedOrigins::default()
        );
    }
}
