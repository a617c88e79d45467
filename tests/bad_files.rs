//! Files a user may hand the loader by mistake or damaged: each gives an error that says what is
//! wrong and what to do, and nothing panics. Also the storage dtypes a checkpoint may use.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use fooocus::nets::sdxl::file::SdxlFile;
use fooocus::nets::sdxl::inspect::inspect;
use fooocus::nets::sdxl::shapes::HeadDims;
use fooocus::weights::backend::LoadMode;
use fooocus::weights::checkpoint::{Architecture, Checkpoint};
use fooocus::weights::ModelError;

fn tiny_base() -> PathBuf {
    common::fixtures().join("sdxl_base.safetensors")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    path
}

fn open_error(path: &Path) -> String {
    let err = Checkpoint::open(path).expect_err("the file must be refused");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error names the file: {text}"
    );
    text
}

/// A tensor name with its shape.
type Spec<'a> = (&'a str, &'a [usize]);

/// A header-only safetensors file of zero tensors with these names and shapes (F16).
fn synthetic(dir: &Path, name: &str, tensors: &[Spec]) -> PathBuf {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (key, shape) in tensors {
        let bytes = 2 * shape.iter().product::<usize>();
        header.insert(
            key.to_string(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend(text);
    bytes.resize(bytes.len() + offset, 0);
    write(dir, name, &bytes)
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(tiny_base()).unwrap();
    let path = write(dir.path(), "truncated.safetensors", &full[..full.len() / 2]);
    let text = open_error(&path);
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains("download it again"), "{text}");
}

#[test]
fn offsets_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"w":{"dtype":"F16","shape":[64],"data_offsets":[0,128]}}    "#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 16]);
    let path = write(dir.path(), "short.safetensors", &bytes);
    let text = open_error(&path);
    assert!(text.contains("has only"), "{text}");
}

#[test]
fn header_longer_than_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":");
    let path = write(dir.path(), "header.safetensors", &bytes);
    let text = open_error(&path);
    assert!(text.contains("header claims 1000000 bytes"), "{text}");
}

#[test]
fn not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    // The start of a PyTorch zip checkpoint, as a user might rename a .ckpt.
    let path = write(
        dir.path(),
        "model.safetensors",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00archive/data.pkl and more bytes",
    );
    let text = open_error(&path);
    assert!(text.contains("not a safetensors file"), "{text}");
    let tiny = write(dir.path(), "tiny.safetensors", b"abc");
    assert!(open_error(&tiny).contains("too short"));
    let json = write(
        dir.path(),
        "json.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!",
    );
    assert!(open_error(&json).contains("not valid JSON"));
    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(
        Checkpoint::open(&missing),
        Err(ModelError::Io { .. })
    ));
}

#[test]
fn sd15_checkpoint_is_refused_with_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = synthetic(
        dir.path(),
        "v1-5-pruned-emaonly.safetensors",
        &[
            (
                "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
                &[77, 768],
            ),
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                &[320, 4, 3, 3],
            ),
            (
                "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                &[320, 768],
            ),
            ("first_stage_model.decoder.conv_in.weight", &[512, 4, 3, 3]),
        ],
    );
    assert_eq!(
        Checkpoint::open(&path).unwrap().architecture(),
        Architecture::Sd1
    );
    let err = SdxlFile::open(&path, HeadDims::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Stable Diffusion 1.x") && err.contains("not an SDXL checkpoint"),
        "{err}"
    );
    let report = inspect(&path, HeadDims::default()).unwrap();
    assert_eq!(report.architecture, Architecture::Sd1);
    assert!(!report.problems.is_empty());
}

#[test]
fn other_layouts_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[Spec], Architecture); 4] = [
        (
            "sd2.safetensors",
            &[(
                "cond_stage_model.model.token_embedding.weight",
                &[49408, 1024],
            )],
            Architecture::Sd2,
        ),
        (
            "lora.safetensors",
            &[(
                "lora_unet_middle_block_1_proj_in.lora_down.weight",
                &[4, 1280],
            )],
            Architecture::Lora,
        ),
        (
            "unet.safetensors",
            &[(
                "model.diffusion_model.input_blocks.0.0.weight",
                &[320, 4, 3, 3],
            )],
            Architecture::UnetOnly,
        ),
        (
            "other.safetensors",
            &[("foo.bar", &[3])],
            Architecture::Unknown,
        ),
    ];
    for (name, tensors, expected) in cases {
        let path = synthetic(dir.path(), name, tensors);
        assert_eq!(
            Checkpoint::open(&path).unwrap().architecture(),
            expected,
            "{name}"
        );
        let err = SdxlFile::open(&path, HeadDims::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected.describe()), "{err}");
    }
}

#[test]
fn refiner_where_a_base_is_required() {
    let path = common::fixtures().join("sdxl_refiner.safetensors");
    let file = SdxlFile::open(&path, common::tiny_heads("base_unet_sgm")).unwrap();
    let err = file
        .require(Architecture::SdxlBase)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refiner") && err.contains("base model"),
        "{err}"
    );
}

/// Rewrites the tiny base with its tensors converted to `dtype`, dropping `drop`.
fn rewrite(dir: &Path, name: &str, dtype: DType, drop: &[&str]) -> PathBuf {
    let tensors = candle_core::safetensors::load(tiny_base(), &Device::Cpu).unwrap();
    let converted: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, t)| {
            let t = if t.dtype().is_float() {
                t.to_dtype(dtype).unwrap()
            } else {
                t
            };
            (k, t)
        })
        .collect();
    let path = dir.join(name);
    candle_core::safetensors::save(&converted, &path).unwrap();
    path
}

#[test]
fn missing_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let gone = [
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.out.2.bias",
    ];
    let path = rewrite(dir.path(), "broken.safetensors", DType::F16, &gone);
    let file = SdxlFile::open(&path, common::tiny_heads("base_unet_sgm")).unwrap();
    let err = file
        .unet(LoadMode::Meta, &Device::Cpu)
        .err()
        .expect("missing tensors")
        .to_string();
    for name in gone {
        assert!(err.contains(name), "{err}");
    }
    let report = inspect(&path, common::tiny_heads("base_unet_sgm")).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains(gone[0])),
        "{:?}",
        report.problems
    );
}

#[test]
fn fp32_and_bf16_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let reference = common::Tensors::open("reference/unet_base.safetensors");
    let run = |path: &Path| {
        let file = SdxlFile::open(path, common::tiny_heads("base_unet_sgm")).unwrap();
        let (unet, _) = file.unet(LoadMode::Real, &Device::Cpu).unwrap();
        unet.forward(
            &reference.get("unet_input"),
            &reference.get("timestep"),
            &reference.get("context"),
            &reference.get("y"),
        )
        .unwrap()
    };
    let f16 = run(&tiny_base());
    let f32_path = rewrite(dir.path(), "f32.safetensors", DType::F32, &[]);
    assert_eq!(
        common::rel_err(&run(&f32_path), &f16),
        0.0,
        "fp32 file of the same values"
    );
    let bf16_path = rewrite(dir.path(), "bf16.safetensors", DType::BF16, &[]);
    assert_eq!(
        Checkpoint::open(&bf16_path).unwrap().weight_dtype(),
        Some(safetensors::Dtype::BF16)
    );
    let err = common::rel_err(&run(&bf16_path), &f16);
    println!("bf16-rounded weights: relative deviation {err:.3e}");
    assert!(err < 0.1, "bf16 weights deviate by {err}");
}
