//! The safetensors header parser behind `Checkpoint::open` (which reads a file: each input is
//! written to one temporary file per process), then everything that reads the parsed header:
//! `architecture`, `weight_dtype`, the prefix queries, and `load` of small tensors.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fooocus::weights::checkpoint::{
    Checkpoint, CLIP_G_BASE_PREFIX, CLIP_L_PREFIX, UNET_PREFIX, VAE_PREFIX,
};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("fooocus-fuzz-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    std::fs::write(path, data).expect("write the temporary file");
    let ckpt = match Checkpoint::open(path) {
        Ok(c) => c,
        Err(e) => {
            // The message must render (and name the file).
            let _ = e.to_string();
            return;
        }
    };
    let arch = ckpt.architecture();
    let _ = (arch.is_sdxl(), arch.describe(), ckpt.weight_dtype());
    for prefix in [
        UNET_PREFIX,
        VAE_PREFIX,
        CLIP_L_PREFIX,
        CLIP_G_BASE_PREFIX,
        "",
        "a",
    ] {
        let _ = ckpt.has_prefix(prefix);
        let _ = ckpt.count_indexed(prefix);
        let _ = ckpt.names_under(prefix).count();
    }
    let _ = (ckpt.file_len(), ckpt.file_metadata().len());
    let names: Vec<String> = ckpt.tensors().keys().take(8).cloned().collect();
    for name in names {
        let _ = ckpt.shape(&name);
        let info = &ckpt.tensors()[&name];
        let (begin, end) = info.data_offsets;
        if end.saturating_sub(begin) <= 1 << 16 {
            let _ = ckpt.load(&name, candle_core::DType::F32, &candle_core::Device::Cpu);
        }
    }
});
