//! Refusing requests another web site makes through the user's browser (cross-site request
//! forgery): a page elsewhere must not queue jobs, stop them, read previews over the WebSocket
//! or fetch images, whether we listen on loopback or on the LAN.
//!
//! Browsers say where a request comes from in `Sec-Fetch-Site`, computed from the page's own
//! origin, so it holds behind a path-prefix proxy or a notebook tunnel that rewrites `Host`.
//! `same-origin` and `none` (typed URL, bookmark) pass; `cross-site` and `same-site` (another
//! port of the same host) are refused, except a top-level navigation to the page. Browsers only
//! send it to secure origins (https, localhost); without it the guard falls back to `Origin`,
//! which must name the host the request was sent to or, when we listen on loopback, a page on
//! this machine (a local proxy such as Jupyter's). Requests without either header (curl,
//! scripts) pass. Not covered: DNS rebinding (a foreign name resolving to this machine looks
//! same-origin to the browser); a `Host` allowlist would be its guard.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Whether the browser request described by `headers` may go on. `lan`: we listen beyond
/// loopback, where an `Origin` on this machine is not enough.
pub fn same_site_request(method: &Method, headers: &HeaderMap, lan: bool) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match text("sec-fetch-site") {
        Some("same-origin") | Some("none") => true,
        Some(_) => {
            (method == Method::GET || method == Method::HEAD)
                && text("sec-fetch-mode") == Some("navigate")
        }
        None => origin_names_host(headers) || (!lan && origin_is_local(headers)),
    }
}

/// Whether the `Origin` header names a page served from this machine (localhost, 127.0.0.0/8,
/// [::1], any port).
fn origin_is_local(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = super::hosts::bare_host(rest.trim_end_matches('/'));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the `Origin` header (if any) names the host the request was sent to. `null` (a
/// sandboxed or file page) does not.
pub fn origin_names_host(headers: &HeaderMap) -> bool {
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

/// Middleware: 403 for a request another site made; `lan` as in [`same_site_request`].
pub async fn refuse_cross_site(State(lan): State<bool>, request: Request, next: Next) -> Response {
    if same_site_request(request.method(), request.headers(), lan) {
        return next.run(request).await;
    }
    ApiError::new(
        StatusCode::FORBIDDEN,
        "refused: this request came from another web site's page (open fooocus at its own \
         address; behind a proxy, keep the Host header or serve it over https)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn origins_must_name_the_host() {
        assert!(origin_names_host(&headers(&[])));
        let host = ("host", "192.168.1.5:7865");
        assert!(origin_names_host(&headers(&[
            host,
            ("origin", "http://192.168.1.5:7865")
        ])));
        assert!(!origin_names_host(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!origin_names_host(&headers(&[host, ("origin", "null")])));
    }

    #[test]
    fn fetch_metadata_decides_then_origin_on_the_lan() {
        let post = Method::POST;
        for lan in [false, true] {
            for site in ["same-origin", "none"] {
                assert!(same_site_request(
                    &post,
                    &headers(&[("sec-fetch-site", site)]),
                    lan
                ));
            }
            for site in ["cross-site", "same-site"] {
                let h = headers(&[("sec-fetch-site", site), ("sec-fetch-mode", "cors")]);
                assert!(!same_site_request(&post, &h, lan), "{site}");
                assert!(!same_site_request(&Method::GET, &h, lan), "{site}");
                let link = headers(&[("sec-fetch-site", site), ("sec-fetch-mode", "navigate")]);
                assert!(same_site_request(&Method::GET, &link, lan), "{site}");
                assert!(!same_site_request(&post, &link, lan), "{site}");
            }
            assert!(same_site_request(&post, &headers(&[]), lan));
        }
        let foreign = headers(&[("host", "10.0.0.2:7865"), ("origin", "http://evil.example")]);
        assert!(!same_site_request(&post, &foreign, false));
        assert!(!same_site_request(&post, &foreign, true));
        // A local proxy (Jupyter on another port) rewriting Host passes on loopback only.
        for origin in [
            "http://localhost:8888",
            "http://127.0.0.1:8888",
            "http://[::1]:8888",
        ] {
            let proxied = headers(&[("host", "localhost:7865"), ("origin", origin)]);
            assert!(same_site_request(&post, &proxied, false), "{origin}");
            assert!(!same_site_request(&post, &proxied, true), "{origin}");
        }
        let sneaky = headers(&[
            ("host", "localhost:7865"),
            ("origin", "http://localhost.evil.example"),
        ]);
        assert!(!same_site_request(&post, &sneaky, false));
        let own = headers(&[
            ("host", "10.0.0.2:7865"),
            ("origin", "http://10.0.0.2:7865"),
        ]);
        assert!(same_site_request(&post, &own, true));
    }
}
