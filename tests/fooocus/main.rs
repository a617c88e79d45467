//! Fooocus semantics against `$FOOOCUS_FIXTURES/fooocus` and `$FOOOCUS_FIXTURES/lora`.

#[path = "../common/mod.rs"]
mod common;

mod guidance;
mod lora;
mod prompts;
