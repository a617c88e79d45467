//! Downloads from a Hugging Face-compatible hub (the endpoint from `HF_ENDPOINT` or a mirror):
//! the metadata request (`Range: bytes=0-0`, `ETag`/`X-Linked-Etag`, `X-Repo-Commit`,
//! `Content-Range`), then the data into `<file>.part`, resumed with a `Range` request after a
//! dropped connection or a restart, retried with backoff, and renamed into place only after the
//! size and sha256 match.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CatalogEntry, HubError};
use crate::store::file_sha256;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Progress of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadProgress {
    pub file: String,
    pub downloaded: u64,
    pub total: u64,
}

/// Where and how to download.
#[derive(Debug, Clone)]
pub struct HubClient {
    endpoint: String,
    token: Option<String>,
    retries: u32,
    backoff: Duration,
}

/// What the hub says about a file before its data is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileInfo {
    size: u64,
    sha256: Option<String>,
}

impl HubClient {
    /// A client for `endpoint` (no trailing slash needed).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: None,
            retries: 5,
            backoff: Duration::from_secs(1),
        }
    }

    /// The endpoint from `mirror`, else `HF_ENDPOINT`, else the public hub; the token from
    /// `HF_TOKEN`.
    pub fn from_env(mirror: Option<&str>) -> Self {
        let endpoint = mirror
            .map(str::to_string)
            .or_else(|| std::env::var("HF_ENDPOINT").ok())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let mut client = Self::new(endpoint);
        client.token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        client
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Attempts per file after a failed transfer, and the first wait (doubled each time).
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    fn url(&self, entry: &CatalogEntry) -> String {
        entry.url(&self.endpoint)
    }

    fn agent(&self, follow_redirects: bool) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(if follow_redirects { 10 } else { 0 })
            .max_redirects_will_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .build();
        ureq::Agent::new_with_config(config)
    }

    fn get(
        &self,
        agent: &ureq::Agent,
        url: &str,
        range: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = agent.get(url).header("Range", range);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.call()
    }

    /// Downloads `entry` to `dest` unless a file is already there. Returns the final path.
    pub fn download(
        &self,
        entry: &CatalogEntry,
        dest: &Path,
        progress: &mut dyn FnMut(DownloadProgress),
    ) -> Result<PathBuf, HubError> {
        if dest.is_file() {
            return Ok(dest.to_path_buf());
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        let info = self.info(entry, dest)?;
        let size = entry.size.unwrap_or(info.size);
        let sha256 = entry.sha256.clone().or(info.sha256);
        let part = part_path(dest);
        let mut attempt = 0;
        loop {
            match self.fetch(entry, &part, size, progress) {
                Ok(()) => break,
                Err(e) if e.is_retryable() && attempt < self.retries => {
                    let wait = self.backoff * 2u32.saturating_pow(attempt);
                    tracing::warn!("{}: {e}; retrying in {wait:?}", entry.file);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        verify(&part, size, sha256.as_deref(), entry)?;
        std::fs::rename(&part, dest).map_err(|e| HubError::io(dest, e))?;
        tracing::info!("downloaded {}", dest.display());
        Ok(dest.to_path_buf())
    }

    /// The size and hash the hub announces, from a one-byte ranged request whose redirect is
    /// not followed (the hub puts `X-Linked-*` on the redirect of large files).
    fn info(&self, entry: &CatalogEntry, dest: &Path) -> Result<FileInfo, HubError> {
        let url = self.url(entry);
        let response = self
            .get(&self.agent(false), &url, "bytes=0-0")
            .map_err(|e| HubError::offline(entry, &self.endpoint, dest, e))?;
        check_status(response.status().as_u16(), entry, &self.endpoint)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.trim()
                        .trim_matches('"')
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .to_string()
                })
        };
        let size = header("x-linked-size")
            .and_then(|s| s.parse().ok())
            .or_else(|| header("content-range").and_then(|r| r.rsplit('/').next()?.parse().ok()))
            .or(entry.size)
            .ok_or_else(|| HubError::Protocol {
                file: entry.file.clone(),
                reason: "the hub announced no size (no Content-Range)".into(),
            })?;
        let sha256 = header("x-linked-etag")
            .or_else(|| header("etag"))
            .filter(|e| e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|e| e.to_ascii_lowercase());
        Ok(FileInfo { size, sha256 })
    }

    /// Fetches what `part` still lacks of a `size`-byte file.
    fn fetch(
        &self,
        entry: &CatalogEntry,
        part: &Path,
        size: u64,
        progress: &mut dyn FnMut(DownloadProgress),
    ) -> Result<(), HubError> {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(part).map_err(|e| HubError::io(part, e))?;
            return Err(HubError::Transfer {
                file: entry.file.clone(),
                reason: "the partial file was larger than the file; starting over".into(),
            });
        }
        let mut report = |downloaded| {
            progress(DownloadProgress {
                file: entry.file.clone(),
                downloaded,
                total: size,
            })
        };
        report(have);
        if have == size {
            return Ok(());
        }
        let response = self
            .get(
                &self.agent(true),
                &self.url(entry),
                &format!("bytes={have}-"),
            )
            .map_err(|e| HubError::Transfer {
                file: entry.file.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status().as_u16();
        check_status(status, entry, &self.endpoint)?;
        let mut out = if status == 206 {
            OpenOptions::new().append(true).create(true).open(part)
        } else {
            // The hub ignored the range: take the whole file from the start.
            File::create(part)
        }
        .map_err(|e| HubError::io(part, e))?;
        let mut done = if status == 206 { have } else { 0 };
        let mut reader = response.into_body().into_reader();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| HubError::Transfer {
                file: entry.file.clone(),
                reason: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&buffer[..n])
                .map_err(|e| HubError::io(part, e))?;
            done += n as u64;
            report(done);
        }
        out.flush().map_err(|e| HubError::io(part, e))?;
        if done < size {
            return Err(HubError::Transfer {
                file: entry.file.clone(),
                reason: format!("the connection closed after {done} of {size} bytes"),
            });
        }
        Ok(())
    }
}

/// `<dest>.part`.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

fn check_status(status: u16, entry: &CatalogEntry, endpoint: &str) -> Result<(), HubError> {
    match status {
        200..=399 => Ok(()),
        401 | 403 => Err(HubError::Unauthorized {
            repo: entry.repo.clone(),
            file: entry.file.clone(),
        }),
        404 => Err(HubError::NotFound {
            repo: entry.repo.clone(),
            file: entry.file.clone(),
            endpoint: endpoint.to_string(),
        }),
        _ => Err(HubError::Transfer {
            file: entry.file.clone(),
            reason: format!("the hub answered HTTP {status}"),
        }),
    }
}

/// Checks the finished part's size and sha256; a mismatch deletes it.
fn verify(
    part: &Path,
    size: u64,
    sha256: Option<&str>,
    entry: &CatalogEntry,
) -> Result<(), HubError> {
    let len = std::fs::metadata(part)
        .map_err(|e| HubError::io(part, e))?
        .len();
    let fail = |reason: String| {
        let _ = std::fs::remove_file(part);
        HubError::Mismatch {
            file: entry.file.clone(),
            reason,
        }
    };
    if len != size {
        return Err(fail(format!("{len} bytes instead of {size}")));
    }
    if let Some(expected) = sha256 {
        let actual = file_sha256(part).map_err(|e| HubError::Transfer {
            file: entry.file.clone(),
            reason: e.to_string(),
        })?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(fail(format!("sha256 {actual} instead of {expected}")));
        }
    }
    Ok(())
}
