//! The library's command-line edge: the flag structs (clap) that `fooocus` and its subcommands
//! parse, and `serve`, which starts the server from them (`fooocus` with no subcommand).
//!
//! Nothing below this room parses flags: it hands `runtime`, `config` and `server` plain values.

pub mod compute;
pub mod serve;
pub mod worker;

/// The multi-threaded tokio runtime the server and the worker run on; the error says so.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

pub use compute::ComputeArgs;
