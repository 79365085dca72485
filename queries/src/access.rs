//! Who may talk to the API from a browser: the `Host` a request names (DNS rebinding) and the
//! `Origin` of the page that sends it (any web page the operator opens can reach loopback).
//!
//! - `Host` must be the address the connection came in on (with `localhost` for a loopback
//!   address), or a name the operator allows (`--api-allow-host`). A rebinding page sends its own
//!   name and is refused with 421.
//! - A request with an `Origin` must come from this server's own origin (the origin's host and
//!   port are the request's `Host`) or from an origin the operator allows
//!   (`--api-allow-origin`); others get 403, WebSocket handshakes included (browsers apply no CORS
//!   to WebSockets). Allowed origins get CORS answers, preflights included. A request without
//!   `Origin` is not from a web page's script (browsers send it on every cross-origin request, every
//!   POST and every WebSocket handshake) and passes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The address a connection was accepted on, put on each of its requests by [`crate::serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// A `--api-allow-host` or `--api-allow-origin` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// Not a host name, with or without a port.
    #[error("--api-allow-host {0:?} is not a host name (give NAME or NAME:PORT, e.g. lcw.example.com)")]
    Host(String),
    /// Not an origin.
    #[error(
        "--api-allow-origin {0:?} is not an origin (give SCHEME://HOST[:PORT] without a path, e.g. https://dash.example.com, or *)"
    )]
    Origin(String),
}

/// The Host and Origin rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Allowed names, with the port when one was given.
    hosts: Vec<(String, Option<u16>)>,
    any_host: bool,
    /// Allowed origins, normalised (`scheme://host[:port]`, lowercase).
    origins: Vec<String>,
    any_origin: bool,
}

/// What an `Origin` is to this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginVerdict {
    /// This server's own origin: no CORS needed.
    Same,
    /// Another origin the operator allows: answered with CORS headers.
    Allowed,
    /// Refused.
    Foreign,
}

impl Access {
    /// Rules from `--api-allow-host` values (`NAME`, `NAME:PORT`, or `*` for any) and
    /// `--api-allow-origin` values (`SCHEME://HOST[:PORT]`, `null`, or `*` for any).
    pub fn new(hosts: &[String], origins: &[String]) -> Result<Access, AccessError> {
        let mut access = Access::default();
        for h in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
            if h == "*" {
                access.any_host = true;
                continue;
            }
            let (name, port) = split_host(h).ok_or_else(|| AccessError::Host(h.to_owned()))?;
            if name.is_empty() || name.contains(['/', '@', ' ']) {
                return Err(AccessError::Host(h.to_owned()));
            }
            access.hosts.push((name, port));
        }
        for o in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if o == "*" {
                access.any_origin = true;
                continue;
            }
            access.origins.push(normalise_origin(o).ok_or_else(|| AccessError::Origin(o.to_owned()))?);
        }
        Ok(access)
    }

    /// Whether a request naming `host` may be served on a connection accepted at `local` (None:
    /// not known, as under a plain `axum::serve`; then only loopback names pass).
    pub fn host_allowed(&self, host: &str, local: Option<SocketAddr>) -> bool {
        if self.any_host {
            return true;
        }
        let Some((name, port)) = split_host(host) else { return false };
        let loopback_name = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let own = match local {
            Some(local) => {
                let local_ip = canonical(local.ip());
                let same_ip = name.parse::<IpAddr>().is_ok_and(|ip| canonical(ip) == local_ip);
                port.unwrap_or(80) == local.port() && (same_ip || (local_ip.is_loopback() && loopback_name))
            }
            None => loopback_name,
        };
        own || self.hosts.iter().any(|(n, p)| *n == name && p.is_none_or(|p| Some(p) == port))
    }

    /// What `origin` (an `Origin` header) is to a request naming `host` (its checked `Host`).
    pub fn origin(&self, origin: &str, host: &str) -> OriginVerdict {
        let origin = origin.trim().to_ascii_lowercase();
        let same = ["http://", "https://"]
            .iter()
            .any(|s| origin.strip_prefix(s).is_some_and(|authority| authority == host.trim().to_ascii_lowercase()));
        if same {
            OriginVerdict::Same
        } else if self.any_origin || self.origins.contains(&origin) {
            OriginVerdict::Allowed
        } else {
            OriginVerdict::Foreign
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports them so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `name[:port]` or `[v6][:port]`, lowercased, without a trailing dot.
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (v6.to_owned(), port)
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n.to_owned(), Some(p.parse().ok()?)),
            None => (host.clone(), None),
        }
    };
    let name = name.strip_suffix('.').unwrap_or(&name).to_owned();
    Some((name, port))
}

/// `scheme://host[:port]`, lowercase, without a trailing slash; None for anything else.
fn normalise_origin(origin: &str) -> Option<String> {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if o == "null" {
        return Some(o);
    }
    let (scheme, authority) = o.split_once("://")?;
    let scheme_ok = !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let (name, _) = split_host(authority)?;
    let clean = !name.is_empty() && !authority.contains(['/', '?', '#', '@', ' ']);
    (scheme_ok && clean).then_some(o)
}

/// The middleware: refuses foreign `Host`s and `Origin`s, answers preflights, adds CORS headers
/// for allowed origins.
pub(crate) async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned) else {
        return refuse(StatusCode::BAD_REQUEST, "refused: the request has no Host header\n".into());
    };
    if !access.host_allowed(&host, local) {
        tracing::debug!(%host, ?local, "refused a foreign Host");
        let at = local.map(|l| format!(" ({l})")).unwrap_or_default();
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "refused: Host {host} is not this server's address{at}; to serve it under that name, start it with \
                 --api-allow-host NAME (LCW_API_ALLOW_HOST)\n"
            ),
        );
    }
    let Some(origin) = req.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("?").to_owned()) else {
        return next.run(req).await;
    };
    match access.origin(&origin, &host) {
        OriginVerdict::Same => next.run(req).await,
        OriginVerdict::Foreign => {
            tracing::debug!(%origin, %host, "refused a foreign Origin");
            refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "refused: web pages on {origin} may not use this API; to let them, start it with \
                     --api-allow-origin {origin} (LCW_API_ALLOW_ORIGIN)\n"
                ),
            )
        }
        OriginVerdict::Allowed if is_preflight(&req) => preflight(&origin, req.headers()),
        OriginVerdict::Allowed => {
            let mut resp = next.run(req).await;
            allow(resp.headers_mut(), &origin);
            resp
        }
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Seconds a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

fn preflight(origin: &str, request: &HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    allow(h, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    // No credentials are ever accepted (the API has none), so any request header may be sent.
    if let Some(asked) = request.get(header::ACCESS_CONTROL_REQUEST_HEADERS).filter(|v| v.len() <= 1024) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
    h.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"));
    resp
}

fn allow(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_listen_address_and_localhost_pass_and_rebound_names_do_not() {
        let a = Access::default();
        let l = local("127.0.0.1:8080");
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "localhost.:8080", "[::1]:8080"] {
            assert!(a.host_allowed(ok, l), "{ok}");
        }
        for bad in ["evil.example:8080", "127.0.0.1:8081", "localhost", "127.0.0.1.evil.example:8080", "", "[::1"] {
            assert!(!a.host_allowed(bad, l), "{bad}");
        }
        // A public listen address: the address the client used, not loopback names.
        let l = local("192.0.2.7:8080");
        assert!(a.host_allowed("192.0.2.7:8080", l));
        assert!(!a.host_allowed("localhost:8080", l));
        assert!(a.host_allowed("192.0.2.7:8080", local("[::ffff:192.0.2.7]:8080")), "dual-stack socket");
        // Unknown local address: loopback names only.
        assert!(a.host_allowed("127.0.0.1:1234", None) && !a.host_allowed("evil.example:1234", None));
    }

    #[test]
    fn allowed_names_match_with_any_port_unless_one_is_given() {
        let a = Access::new(&["lcw.example.com".into(), "Box.Lan:9000".into()], &[]).unwrap();
        let l = local("127.0.0.1:8080");
        assert!(a.host_allowed("lcw.example.com", l) && a.host_allowed("lcw.example.com:443", l));
        assert!(a.host_allowed("box.lan:9000", l) && !a.host_allowed("box.lan:8080", l));
        assert!(!a.host_allowed("other.example.com", l));
        assert!(Access::new(&["*".into()], &[]).unwrap().host_allowed("anything:1", l));
        assert_eq!(Access::new(&["a/b".into()], &[]), Err(AccessError::Host("a/b".into())));
    }

    #[test]
    fn origins_are_same_allowed_or_foreign() {
        let a = Access::new(&[], &["https://Dash.Example.com/".into(), "null".into()]).unwrap();
        assert_eq!(a.origin("http://127.0.0.1:8080", "127.0.0.1:8080"), OriginVerdict::Same);
        assert_eq!(a.origin("https://lcw.example.com", "lcw.example.com"), OriginVerdict::Same);
        assert_eq!(a.origin("http://127.0.0.1:8081", "127.0.0.1:8080"), OriginVerdict::Foreign);
        assert_eq!(a.origin("https://dash.example.com", "127.0.0.1:8080"), OriginVerdict::Allowed);
        assert_eq!(a.origin("https://dash.example.com:444", "127.0.0.1:8080"), OriginVerdict::Foreign);
        assert_eq!(a.origin("null", "127.0.0.1:8080"), OriginVerdict::Allowed);
        assert_eq!(Access::default().origin("null", "127.0.0.1:8080"), OriginVerdict::Foreign);
        let any = Access::new(&[], &["*".into()]).unwrap();
        assert_eq!(any.origin("https://anyone.example", "127.0.0.1:8080"), OriginVerdict::Allowed);
        for bad in ["dash.example.com", "https://dash.example.com/app", "https://", "ftp//x"] {
            assert_eq!(Access::new(&[], &[bad.into()]), Err(AccessError::Origin(bad.into())), "{bad}");
        }
    }
}
