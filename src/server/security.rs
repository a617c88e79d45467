//! Refusing requests another web site makes through the user's browser (cross-site request
//! forgery): a page elsewhere must not queue jobs, stop them, read previews over the WebSocket
//! or fetch images, whether we listen on loopback or on the LAN.
//!
//! Browsers say where a request comes from in `Sec-Fetch-Site`, computed from the page's own
//! origin, so it holds behind a path-prefix proxy or a notebook tunnel that rewrites `Host`.
//! `same-origin` and `none` (typed URL, bookmark) pass; `cross-site` and `same-site` (another
//! port of the same host) are refused, except a top-level navigation to the page. Browsers only
//! send it to secure origins (https, localhost); over plain http on the LAN the guard falls back
//! to comparing `Origin` with `Host`. Requests without either header (curl, scripts) pass.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether the browser request described by `headers` may go on. `lan`: we listen beyond
/// loopback, where `Origin` must name the host when `Sec-Fetch-Site` is absent.
pub fn same_site_request(method: &Method, headers: &HeaderMap, lan: bool) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match text("sec-fetch-site") {
        Some("same-origin") | Some("none") => true,
        Some(_) => {
            (method == Method::GET || method == Method::HEAD)
                && text("sec-fetch-mode") == Some("navigate")
        }
        None => !lan || origin_names_host(headers),
    }
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
    (
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
        assert!(same_site_request(&post, &foreign, false));
        assert!(!same_site_request(&post, &foreign, true));
        let own = headers(&[
            ("host", "10.0.0.2:7865"),
            ("origin", "http://10.0.0.2:7865"),
        ]);
        assert!(same_site_request(&post, &own, true));
    }
}
