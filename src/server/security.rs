//! Safety when listening on a network: HTTP basic authentication on every route (pages, API,
//! WebSocket, images) and the WebSocket `Origin` check against `Host`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

/// A user name and password, from `--auth user:pass`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::str::FromStr for Credentials {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("expected USER:PASSWORD, both non-empty (e.g. --auth alice:s3cret)".into()),
        }
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `expected` as HTTP basic credentials.
pub fn authorized(headers: &HeaderMap, expected: &Credentials) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let wanted = format!("{}:{}", expected.user, expected.password);
    same(&decoded, wanted.as_bytes())
}

/// Middleware: 401 with a basic-auth challenge unless the credentials match.
pub async fn require_auth(
    State(expected): State<Credentials>,
    request: Request,
    next: Next,
) -> Response {
    if authorized(request.headers(), &expected) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "authentication required: log in with the user and password given to --auth",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"fooocus\", charset=\"UTF-8\""),
    );
    response
}

/// Whether a WebSocket handshake's `Origin` (if any) names the host it was sent to. Browsers
/// always send `Origin`; a page on another site gets refused. Clients without `Origin` (not a
/// browser) pass.
pub fn origin_allowed(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_end_matches('/');
    origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_match() {
        let c: Credentials = "alice:pa:ss".parse().unwrap();
        assert_eq!(c.password, "pa:ss");
        assert!("alice".parse::<Credentials>().is_err());
        assert!(":x".parse::<Credentials>().is_err());
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &c));
        let token = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        assert!(authorized(&h, &c));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        assert!(!authorized(&h, &c));
    }

    #[test]
    fn origins_must_name_the_host() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&h));
        h.insert(header::HOST, HeaderValue::from_static("192.168.1.5:7865"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://192.168.1.5:7865"),
        );
        assert!(origin_allowed(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_allowed(&h));
    }
}
