//! A request's JSON → `GenerateRequest` → `plan::plan`, against a config whose model folders hold
//! tiny header-only files (an SDXL base, a refiner, an SD 1.5 file, LoRAs, a broken and an empty
//! file), a small wildcard folder and the repository's styles. Refusals are fine; panics, hangs
//! and huge allocations are not.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fooocus::config::{Config, Preset};
use fooocus::pipeline::plan::plan;
use fooocus::pipeline::request::GenerateRequest;
use fooocus::pipeline::styles::StyleLibrary;
use libfuzzer_sys::fuzz_target;

/// A safetensors file holding an empty F16 tensor under each name.
fn header_only(names: &[&str]) -> Vec<u8> {
    let entries: Vec<String> = names
        .iter()
        .map(|n| format!("\"{n}\":{{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[0,0]}}"))
        .collect();
    let header = format!("{{{}}}", entries.join(","));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out
}

struct Setup {
    config: Config,
    preset: Preset,
    styles: StyleLibrary,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("make a folder");
    std::fs::write(path, bytes).expect("write a fixture file");
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let root: PathBuf =
            std::env::temp_dir().join(format!("fooocus-fuzz-plan-{}", std::process::id()));
        let ckpt = root.join("checkpoints");
        let loras = root.join("loras");
        let base = header_only(&[
            "model.diffusion_model.label_emb.0.0.weight",
            "model.diffusion_model.input_blocks.0.0.weight",
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            "conditioner.embedders.1.model.ln_final.weight",
            "first_stage_model.decoder.conv_in.weight",
        ]);
        let refiner = header_only(&[
            "model.diffusion_model.label_emb.0.0.weight",
            "conditioner.embedders.0.model.ln_final.weight",
        ]);
        let lora = header_only(&["lora_unet_down_blocks_0.lora_down.weight"]);
        write(&ckpt.join("sd_xl_base_1.0_0.9vae.safetensors"), &base);
        write(&ckpt.join("sd_xl_refiner_1.0_0.9vae.safetensors"), &refiner);
        write(&ckpt.join("sub/other_base.safetensors"), &base);
        write(
            &ckpt.join("sd15.safetensors"),
            &header_only(&["cond_stage_model.transformer.x"]),
        );
        write(
            &ckpt.join("broken.safetensors"),
            b"\xff\xff\xff\xff\xff\xff\xff\xff{",
        );
        write(&ckpt.join("empty.safetensors"), b"");
        write(
            &loras.join("sd_xl_offset_example-lora_1.0.safetensors"),
            &lora,
        );
        write(&loras.join("sdxl_lcm_lora.safetensors"), &lora);
        write(&loras.join("sdxl_hyper_sd_4step_lora.safetensors"), &lora);
        write(&loras.join("sub/style.safetensors"), &lora);
        write(&loras.join("not_a_lora.safetensors"), &base);
        // No Lightning LoRA: that mode must be refused by name.
        write(&root.join("wildcards/color.txt"), b"red\n__shade__ blue\n");
        write(&root.join("wildcards/shade.txt"), b"dark\n__color__\n");
        write(&root.join("wildcards/bad.txt"), b"\xff\xfe");

        let mut config = Config::default();
        config.paths.checkpoints = vec![ckpt, root.join("missing")];
        config.paths.loras = vec![loras];
        config.paths.wildcards = root.join("wildcards");
        config.paths.outputs = root.join("outputs");
        let styles_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../styles");
        let styles = StyleLibrary::load(&styles_dir).expect("load the repository's styles");
        Setup {
            config,
            preset: Preset::default(),
            styles,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    let Ok(request) = serde_json::from_slice::<GenerateRequest>(data) else {
        return;
    };
    match plan(&request, &setup.preset, &setup.config, &setup.styles) {
        Ok(p) => {
            assert!(!p.seeds.is_empty());
            assert!(p.steps >= 1);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
