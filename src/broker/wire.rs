//! What travels through Redis: the key names, a job as a stream entry, a worker's report as a
//! stream entry (JSON in `report`, a file's bytes in `bytes`), Stop/Skip as a pub/sub message;
//! and connecting, with errors that name the URL.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamId;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::jobs::JobId;
use crate::pipeline::request::GenerateRequest;
use crate::store::OutputFormat;

/// The stream of jobs, read by the workers' consumer group.
pub const JOBS: &str = "fooocus:jobs";
/// The stream of workers' reports, read by the server's consumer group.
pub const REPORTS: &str = "fooocus:reports";
/// The pub/sub channel of Stop and Skip.
pub const CONTROL: &str = "fooocus:control";
pub const WORKERS_GROUP: &str = "workers";
pub const SERVER_GROUP: &str = "server";

/// The key holding the current attempt of job `id`: a job handed out again (after the server
/// restarted) gets a new attempt, and reports of older ones are ignored.
pub fn attempt_key(id: JobId) -> String {
    format!("fooocus:job:{id}:attempt")
}

/// The key holding the first image of attempt `attempt` of job `id` the server has not saved
/// yet (by attempt: a key left from an earlier job database never matches a new attempt).
pub fn next_image_key(id: JobId, attempt: u64) -> String {
    format!("fooocus:job:{id}:{attempt}:next")
}

/// The key holding the attempt of job `id` that Stop ended: a worker that takes the job later
/// (or missed the pub/sub message) stops it too.
pub fn stop_key(id: JobId) -> String {
    format!("fooocus:job:{id}:stop")
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command may wait for its answer (longer than the blocking reads' 2 s): a broker
/// host that vanished without closing the connection is noticed, and the connection remade.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker that cannot be reached or answers what we cannot read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("`{url}` is not a Redis URL ({why}): use redis://HOST:6379/0")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the broker at {url}: {why} (is redis-server running there?)")]
    Unreachable { url: String, why: String },
    #[error("the broker at {url} failed: {why}")]
    Command { url: String, why: String },
}

/// Opens a connection that reconnects by itself (with backoff) after the broker restarts.
pub async fn connect(url: &str) -> Result<ConnectionManager, BrokerError> {
    let client = redis::Client::open(url).map_err(|e| BrokerError::BadUrl {
        url: url.to_owned(),
        why: e.to_string(),
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(2);
    let unreachable = |why: String| BrokerError::Unreachable {
        url: url.to_owned(),
        why,
    };
    let mut conn = tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| unreachable("no answer".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(conn)
}

/// Creates `group` on `stream` (and the stream) unless it exists.
pub async fn ensure_group(
    conn: &mut ConnectionManager,
    url: &str,
    stream: &str,
    group: &str,
) -> Result<(), BrokerError> {
    let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(BrokerError::Command {
            url: url.to_owned(),
            why: e.to_string(),
        }),
    }
}

/// A job handed to the workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMessage {
    pub job_id: JobId,
    pub attempt: u64,
    /// The request that plans the job (every field explicit, the seed fixed).
    pub request: GenerateRequest,
    /// Images before it are done.
    pub first_image: usize,
    /// The input image's file, when the job has one (named `sha256:` in `request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputFile>,
}

/// An input image travelling with its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub sha256: String,
    pub extension: String,
}

/// What a worker tells the server about a job (image and step numbers 0-based, as the run's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    Started {
        worker: String,
    },
    Stage {
        text: String,
    },
    ImageStarted {
        index: usize,
        images: usize,
    },
    Step {
        image: usize,
        images: usize,
        step: usize,
        steps: usize,
    },
    /// A JPEG preview in `bytes` (1-based image and step).
    Preview {
        image: usize,
        step: usize,
    },
    /// A finished image's file in `bytes`.
    Image {
        index: usize,
        seed: u64,
        format: OutputFormat,
    },
    Skipped {
        index: usize,
    },
    Done,
    Stopped,
    Failed {
        message: String,
    },
}

/// A report with its job, attempt and bytes, as one stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub job_id: JobId,
    pub attempt: u64,
    pub report: Report,
    pub bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    job_id: JobId,
    attempt: u64,
    #[serde(flatten)]
    report: Report,
}

impl Envelope {
    /// The entry's fields.
    pub fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let head = Head {
            job_id: self.job_id,
            attempt: self.attempt,
            report: self.report.clone(),
        };
        let json = serde_json::to_vec(&head).unwrap_or_default();
        vec![("report", json), ("bytes", self.bytes.clone())]
    }

    /// Reads an entry; `None` for one this version cannot read.
    pub fn from_entry(entry: &StreamId) -> Option<Envelope> {
        let json: Vec<u8> = entry.get("report")?;
        let head: Head = serde_json::from_slice(&json).ok()?;
        Some(Envelope {
            job_id: head.job_id,
            attempt: head.attempt,
            report: head.report,
            bytes: entry.get("bytes").unwrap_or_default(),
        })
    }
}

impl JobMessage {
    pub fn fields(&self, input: Option<&[u8]>) -> Vec<(&'static str, Vec<u8>)> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut fields = vec![("job", json)];
        if let Some(bytes) = input {
            fields.push(("input", bytes.to_vec()));
        }
        fields
    }

    /// Reads an entry: the message and its input file's bytes; `None` for one this version
    /// cannot read.
    pub fn from_entry(entry: &StreamId) -> Option<(JobMessage, Option<Vec<u8>>)> {
        let json: Vec<u8> = entry.get("job")?;
        let message = serde_json::from_slice(&json).ok()?;
        Some((message, entry.get("input")))
    }
}

/// Stop or Skip for a job's attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub job_id: JobId,
    pub attempt: u64,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Stop,
    Skip,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_report_reads_back_from_its_fields() {
        let envelope = Envelope {
            job_id: 9,
            attempt: 2,
            report: Report::Image {
                index: 1,
                seed: 77,
                format: OutputFormat::Png,
            },
            bytes: vec![0, 255, 13, 10],
        };
        let map: HashMap<String, redis::Value> = envelope
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), redis::Value::BulkString(v)))
            .collect();
        let entry = StreamId {
            id: "1-0".into(),
            map,
        };
        assert_eq!(Envelope::from_entry(&entry), Some(envelope));
        let garbled = StreamId {
            id: "2-0".into(),
            map: HashMap::from([("report".into(), redis::Value::BulkString(b"{".to_vec()))]),
        };
        assert_eq!(Envelope::from_entry(&garbled), None);
    }
}
