//! The library's command-line edge: the flag structs (clap) that `fooocus` and its subcommands
//! parse, and `serve`, which starts the server from them (`fooocus` with no subcommand).
//!
//! Nothing below this room parses flags: it hands `runtime`, `config` and `server` plain values.

pub mod compute;
pub mod serve;
pub mod worker;

pub use compute::ComputeArgs;
