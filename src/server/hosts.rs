//! Which names the server answers to, against DNS rebinding: a page on a foreign domain that its
//! owner points at 127.0.0.1 (or at us on the LAN) is same-origin to the browser, so
//! `Sec-Fetch-Site` and `Origin` pass; only the `Host` header it sends still names the foreign
//! domain. Allowed: any IP address (a name is needed to rebind), `localhost` and `*.localhost`,
//! this machine's host name (and `NAME.local`), and the names given with `--allowed-host` (a proxy
//! or a notebook tunnel that keeps its own name in `Host`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The host names (lowercase, without port) a request may name in `Host`, besides IP addresses
/// and `localhost`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// This machine's host name (and `NAME.local`) and the `extra` names (`--allowed-host`).
    pub fn new(extra: &[String]) -> Self {
        let mut names: Vec<String> = extra.iter().map(|n| bare_host(n)).collect();
        let machine = gethostname::gethostname().to_string_lossy().to_lowercase();
        if !machine.is_empty() {
            names.push(format!("{machine}.local"));
            names.push(machine);
        }
        names.retain(|n| !n.is_empty());
        names.sort();
        names.dedup();
        AllowedHosts { names }
    }

    /// Whether a request whose `Host` header is `host` may go on. No `Host` at all (HTTP/1.0,
    /// some scripts) passes: a browser always sends one.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        let name = bare_host(host);
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.names.contains(&name)
    }
}

/// A `Host` (or an `Origin`'s authority) without its port, brackets and trailing dot, lowercase.
pub(super) fn bare_host(host: &str) -> String {
    let host = host.trim();
    let bare = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        },
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

/// Middleware: 403 for a request whose `Host` is not an allowed name.
pub async fn refuse_foreign_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("(not text)").to_owned());
    if hosts.allows(host.as_deref()) {
        return next.run(request).await;
    }
    let shown = host.as_deref().map(bare_host).unwrap_or_default();
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "refused: this server is not reached by the name \"{shown}\" (a page on another \
             site may have pointed that name at it); open it by its address or localhost, or, if \
             you reach it through a proxy or tunnel under this name, start it with \
             --allowed-host {shown}"
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_localhost_and_listed_names_pass_other_names_do_not() {
        let hosts = AllowedHosts::new(&["Fooocus.Example:443".into()]);
        for ok in [
            None,
            Some("127.0.0.1:7865"),
            Some("192.168.1.20"),
            Some("[::1]:7865"),
            Some("localhost:7865"),
            Some("LOCALHOST."),
            Some("app.localhost"),
            Some("fooocus.example"),
            Some("fooocus.example:8443"),
        ] {
            assert!(hosts.allows(ok), "{ok:?}");
        }
        for bad in [
            Some("evil.example"),
            Some("evil.example:7865"),
            Some("localhost.evil.example"),
            Some("127.0.0.1.nip.io"),
            Some(""),
        ] {
            assert!(!hosts.allows(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_machines_own_name_passes() {
        let machine = gethostname::gethostname().to_string_lossy().to_lowercase();
        let hosts = AllowedHosts::new(&[]);
        assert!(hosts.allows(Some(&machine)));
        assert!(hosts.allows(Some(&format!("{machine}.local:7865"))));
    }
}
