//! The subcommands of the `fooocus` binary, one module each.

pub mod download;
pub mod generate;
pub mod inspect;
