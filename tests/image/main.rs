//! Image to image against `$FOOOCUS_IMAGE_FIXTURES` (made by `refgen/image.py` with spandrel,
//! diffusers and PIL): the upscaler network, the tiled VAE, Fooocus' resize rules, and whole
//! Vary and Upscale runs through the pipeline.

#[path = "../common/mod.rs"]
mod common;

mod resize;
mod runs;
mod upscaler;

use std::path::PathBuf;

/// `image_to_image.json`.
fn spec() -> serde_json::Value {
    let path = common::image_fixtures().join("image_to_image.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn tensors() -> common::Tensors {
    common::Tensors::open_at(&common::image_fixtures().join("image_to_image.safetensors"))
}

fn fixture(name: &str) -> PathBuf {
    common::image_fixtures().join(name)
}

fn usize_of(v: &serde_json::Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count")) as usize
}
