//! Security headers on every answer (the page, the API, errors, images, the WebSocket
//! handshake), set by tower-http layers:
//!
//! * `X-Content-Type-Options: nosniff`: a saved file is never read as another type;
//! * `X-Frame-Options: SAMEORIGIN` and CSP `frame-ancestors 'self'`: no other site frames us;
//! * `Content-Security-Policy`: the page runs only its own script and style, shows its own
//!   images and previews (`blob:`, `data:`), and talks only to its own origin (fetch and the
//!   WebSocket); a day's `log.html` (inline style and script of our own) gets [`log_page_policy`],
//!   which allows exactly those by hash;
//! * `Referrer-Policy: no-referrer`: the server's address never leaks to a linked site.

use std::sync::LazyLock;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::store::log_html;

/// The policy of the page and of every other answer.
pub const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'self'";

/// `router` with the security headers on every answer; a `Content-Security-Policy` a handler set
/// (see [`log_page_policy`]) is kept.
pub fn with_security_headers(router: Router) -> Router {
    let set = SetResponseHeaderLayer::overriding;
    router.layer(
        ServiceBuilder::new()
            .layer(set(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(set(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            ))
            .layer(set(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            )),
    )
}

/// `'sha256-…'` of an inline script or style.
fn source_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The policy of a day's `log.html`: its own inline style and script, the images beside it.
pub fn log_page_policy() -> HeaderValue {
    static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
        let policy = format!(
            "default-src 'none'; img-src 'self'; style-src {}; script-src {}; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'self'",
            source_hash(log_html::STYLE),
            source_hash(log_html::SCRIPT)
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(PAGE_POLICY))
    });
    POLICY.clone()
}

/// Middleware: `OPTIONS` on any path answers 204 with `Allow`, before authentication (clients
/// such as SillyTavern's sd.cpp source ping a server so, without credentials). It carries no
/// CORS grant: other sites' pages still cannot call the API.
pub async fn answer_options(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        return (
            StatusCode::NO_CONTENT,
            [(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            )],
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_policy_names_both_inline_hashes() {
        let policy = log_page_policy();
        let policy = policy.to_str().unwrap();
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert!(policy.contains("frame-ancestors 'self'"), "{policy}");
        // sha256("") in base64, as browsers compute it.
        assert_eq!(
            source_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
