//! Workers on many hosts through Redis: the server puts each job on a Redis Stream read by a
//! consumer group of `fooocus worker` processes, which send the job's progress, previews and
//! finished images (the encoded files, so no shared file system is needed) back on a second
//! stream; the server saves each image once (by job and index) and acknowledges nothing it has
//! not handled. A worker that dies mid-job leaves its job pending; another claims it after the
//! visibility timeout and continues from the first image the server has not saved.
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
