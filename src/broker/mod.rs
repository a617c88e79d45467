//! Workers on many hosts through Redis: the server puts each job on a Redis Stream read by a
//! consumer group of `fooocus worker` processes, which send the job's progress, previews and
//! finished images (the encoded files, so no shared file system is needed) back on a second
//! stream; the server saves each image once (by job and index). A worker acknowledges a job only
//! after its end is sent: a worker that dies mid-job leaves its job pending, and another claims
//! it after the visibility timeout and continues from the first image the server has not saved.
//! The server acknowledges a report once it is routed to its job's run; a server that dies
//! before saving it hands the job out again at its next start (a new attempt, from the first
//! image its job database has not recorded), so the image is made again, not lost. Stop is
//! recorded per attempt in Redis as well as published, so a worker that takes the job later, or
//! missed the message, stops too.
//!
//! `wire` is the format (key names, messages as stream fields), `dispatch` the server's side (a
//! job's run that waits on remote reports and turns them into run events), `host` the worker's
//! side. Knows nothing of HTTP; the jobs room sees the dispatch only as a pipeline function.

pub mod dispatch;
pub mod host;
pub mod wire;

pub use dispatch::Dispatch;
pub use host::{run_host, HostOptions};
pub use wire::BrokerError;
