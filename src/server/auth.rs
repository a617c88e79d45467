//! HTTP basic authentication on every route (pages, API, WebSocket, images): the accounts come
//! from `--auth USER:PASSWORD` and from an auth file in the original's `auth.json` format, a
//! JSON list of `{"user": …, "pass": …}` or `{"user": …, "hash": <sha256 hex of the password>}`.
//! User names and passwords are compared as sha256 digests in constant time, against every
//! account; failed logins are slowed down per client address by [`super::throttle`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::throttle::{LoginPolicy, LoginThrottle, Penalty};

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

/// One account: the sha256 of its user name and of its password (plain passwords are hashed on
/// load).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    user_sha256: [u8; 32],
    password_sha256: [u8; 32],
}

/// Everyone allowed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts(Vec<Account>);

/// Why an auth file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the auth file {path} is not a JSON list of {{\"user\": …, \"pass\": …}} or \
         {{\"user\": …, \"hash\": <sha256 hex>}} entries: {source}"
    )]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("the auth file {path}, entry {index} (user {user:?}): {problem}")]
    Entry {
        path: String,
        index: usize,
        user: String,
        problem: &'static str,
    },
}

/// One entry; other keys are ignored, as the original does.
#[derive(Deserialize)]
struct FileEntry {
    user: String,
    pass: Option<String>,
    hash: Option<String>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl Accounts {
    /// Adds `--auth` credentials.
    pub fn add(&mut self, credentials: &Credentials) {
        self.0.push(Account {
            user_sha256: sha256(&credentials.user),
            password_sha256: sha256(&credentials.password),
        });
    }

    /// Reads an auth file (`auth.json` format).
    pub fn load(path: &Path) -> Result<Accounts, AuthFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let entries: Vec<FileEntry> =
            serde_json::from_str(&text).map_err(|source| AuthFileError::Json {
                path: shown.clone(),
                source,
            })?;
        let mut accounts = Accounts::default();
        for (index, entry) in entries.into_iter().enumerate() {
            let fail = |problem| AuthFileError::Entry {
                path: shown.clone(),
                index,
                user: entry.user.clone(),
                problem,
            };
            if entry.user.is_empty() {
                return Err(fail("the user name is empty"));
            }
            // As the original: `hash` wins over `pass`.
            let password_sha256 = match (&entry.hash, &entry.pass) {
                (Some(hash), _) => parse_hex32(hash).ok_or_else(|| {
                    fail("\"hash\" must be 64 hex digits (sha256 of the password)")
                })?,
                (None, Some(pass)) if !pass.is_empty() => sha256(pass),
                _ => return Err(fail("needs a non-empty \"pass\" or a \"hash\"")),
            };
            accounts.0.push(Account {
                user_sha256: sha256(&entry.user),
                password_sha256,
            });
        }
        Ok(accounts)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `user` / `password` is one of the accounts. Every account is compared, each in
    /// constant time, so the time taken tells neither which part differed nor where.
    fn admits(&self, user: &str, password: &str) -> bool {
        let (user, password) = (sha256(user), sha256(password));
        let found = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |found, account| {
                found
                    | (account.user_sha256.ct_eq(&user) & account.password_sha256.ct_eq(&password))
            });
        found.into()
    }
}

impl From<&Credentials> for Accounts {
    fn from(credentials: &Credentials) -> Self {
        let mut accounts = Accounts::default();
        accounts.add(credentials);
        accounts
    }
}

/// What a request's `Authorization` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    /// No credentials (a browser's first request): answered with the challenge, not counted.
    Missing,
    /// Credentials that match no account (or are not basic credentials at all).
    Wrong,
    /// One of the accounts.
    Admitted,
}

/// What the `Authorization` header of `headers` says against `accounts`: Basic credentials, or
/// a Bearer token `user:password` (what an OpenAI client sends as its API key).
pub fn login(headers: &HeaderMap, accounts: &Accounts) -> Login {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Login::Missing;
    };
    let value = value.to_str().unwrap_or_default();
    let scheme = |name: &str| {
        value
            .get(..name.len())
            .filter(|s| s.eq_ignore_ascii_case(name))
            .map(|_| value[name.len()..].trim())
    };
    let credentials = match (scheme("Basic "), scheme("Bearer ")) {
        (Some(encoded), _) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        (None, Some(token)) => Some(token.to_string()),
        (None, None) => None,
    };
    match credentials.as_deref().and_then(|text| text.split_once(':')) {
        Some((user, password)) if accounts.admits(user, password) => Login::Admitted,
        _ => Login::Wrong,
    }
}

/// The accounts and the failed-login table: the state of [`require_auth`].
#[derive(Debug)]
pub struct Gate {
    accounts: Accounts,
    throttle: LoginThrottle,
}

impl Gate {
    pub fn new(accounts: Accounts, policy: LoginPolicy) -> Arc<Gate> {
        Arc::new(Gate {
            accounts,
            throttle: LoginThrottle::new(policy),
        })
    }
}

/// Middleware: 401 with a basic-auth challenge unless the credentials match an account; failed
/// logins from one address are answered later and later, then 429 (see [`super::throttle`]).
pub async fn require_auth(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    // Without `ConnectInfo` (a router served otherwise) all clients share one record.
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let now = Instant::now();
    if let Some(wait) = gate.throttle.blocked(client, now) {
        return locked_out(wait);
    }
    match login(request.headers(), &gate.accounts) {
        Login::Admitted => {
            gate.throttle.succeeded(client);
            next.run(request).await
        }
        Login::Missing => challenge(),
        Login::Wrong => match gate.throttle.failed(client, now) {
            Penalty::None => challenge(),
            Penalty::Delay(wait) => {
                tokio::time::sleep(wait).await;
                challenge()
            }
            Penalty::Lockout(wait) => locked_out(wait),
        },
    }
}

/// 401 with the challenge: `WWW-Authenticate: Basic realm="fooocus", charset="UTF-8"`.
fn challenge() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication required: log in with a user from --auth or --auth-file",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"fooocus\", charset=\"UTF-8\""),
    );
    response
}

/// 429 for an address locked out for `wait` more, with `Retry-After` in whole seconds.
fn locked_out(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many failed logins from your address: try again in {seconds} s (the right \
             password works then, and resets the count)"
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_password: &str) -> HeaderMap {
        let token = base64::engine::general_purpose::STANDARD.encode(user_password);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn credentials_parse_and_match() {
        let c: Credentials = "alice:pa:ss".parse().unwrap();
        assert_eq!(c.password, "pa:ss");
        assert!("alice".parse::<Credentials>().is_err());
        assert!(":x".parse::<Credentials>().is_err());
        let accounts = Accounts::from(&c);
        assert_eq!(login(&HeaderMap::new(), &accounts), Login::Missing);
        assert_eq!(login(&basic("alice:pa:ss"), &accounts), Login::Admitted);
        assert_eq!(login(&basic("alice:pa"), &accounts), Login::Wrong);
        assert_eq!(login(&basic("bob:pa:ss"), &accounts), Login::Wrong);
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(login(&bearer, &accounts), Login::Wrong);
    }

    #[test]
    fn auth_files_take_passwords_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        // sha256("hunter2")
        let hash = "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7";
        std::fs::write(
            &path,
            format!(r#"[{{"user": "ann", "pass": "x1"}}, {{"user": "bo", "hash": "{hash}"}}]"#),
        )
        .unwrap();
        let accounts = Accounts::load(&path).unwrap();
        let admitted = |user_password| login(&basic(user_password), &accounts) == Login::Admitted;
        assert!(admitted("ann:x1"));
        assert!(admitted("bo:hunter2"));
        assert!(!admitted("bo:x1"));
        assert!(!admitted("ann:hunter2"));

        for (text, says) in [
            ("{", "is not a JSON list"),
            (r#"[{"user": "a"}]"#, "entry 0 (user \"a\"): needs"),
            (r#"[{"user": "a", "hash": "abc"}]"#, "64 hex digits"),
            (
                r#"[{"user": "a", "pass": "p", "hash": "ab"}]"#,
                "64 hex digits",
            ),
            (r#"[{"user": "", "pass": "p"}]"#, "user name is empty"),
            (r#"[{"user": "a", "password": "p"}]"#, "needs a non-empty"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Accounts::load(&path).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains("auth.json"), "{error}");
        }
        let plus = format!(r#"[{{"user": "a", "hash": "+f{}"}}]"#, "a".repeat(62));
        std::fs::write(&path, plus).unwrap();
        let error = Accounts::load(&path).unwrap_err().to_string();
        assert!(error.contains("64 hex digits"), "{error}");
        let error = Accounts::load(&dir.path().join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot read the auth file"), "{error}");
    }
}
