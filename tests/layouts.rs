//! The loader on the full-size SDXL 1.0 layouts (`$FOOOCUS_LAYOUTS`, default `fixtures/layouts`): sparse files with
//! the real headers and zero data, checked for detection, inferred configuration and parameter
//! counts without reading the weights.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use fooocus::nets::sdxl::file::SdxlFile;
use fooocus::nets::sdxl::inspect::inspect;
use fooocus::nets::sdxl::shapes::HeadDims;
use fooocus::weights::checkpoint::Architecture;

/// Writes the layout `name` as a sparse safetensors file in `dir` and returns its path.
fn sparse_file(dir: &Path, name: &str) -> PathBuf {
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::layouts().join("layouts_summary.json")).unwrap(),
    )
    .unwrap();
    let part = &summary[name];
    let layout_text =
        std::fs::read_to_string(common::layouts().join(part["file"].as_str().unwrap())).unwrap();
    let layout: serde_json::Value = serde_json::from_str(&layout_text).unwrap();
    let mut header = serde_json::to_vec(&layout).unwrap();
    let header_bytes = part["header_bytes"].as_u64().unwrap() as usize;
    assert!(header.len() <= header_bytes);
    header.resize(header_bytes, b' ');
    let path = dir.join(format!("sd_xl_{name}_1.0.safetensors"));
    let mut file = File::create(&path).unwrap();
    file.write_all(&(header_bytes as u64).to_le_bytes())
        .unwrap();
    file.write_all(&header).unwrap();
    file.set_len(part["file_bytes"].as_u64().unwrap()).unwrap();
    path
}

#[test]
fn full_size_base_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_file(dir.path(), "base");
    let file = SdxlFile::open(&path, HeadDims::default()).unwrap();
    let c = &file.config;
    assert_eq!(c.architecture, Architecture::SdxlBase);
    assert_eq!(c.unet.level_channels(), vec![320, 640, 1280]);
    assert_eq!(c.unet.transformer_depths(), vec![0, 2, 10]);
    assert_eq!(c.unet.middle_depth(), 10);
    assert_eq!(
        (
            c.unet.context_dim,
            c.unet.adm_in_channels,
            c.unet.time_embed_dim
        ),
        (2048, 2816, 1280)
    );
    assert_eq!((c.time_id_dim, c.time_ids), (256, 6));
    let l = c.clip_l.as_ref().unwrap();
    assert_eq!(
        (l.hidden, l.layers, l.heads, l.mlp, l.projection),
        (768, 12, 12, 3072, None)
    );
    let g = &c.clip_g;
    assert_eq!(
        (g.hidden, g.layers, g.heads, g.mlp, g.projection),
        (1280, 32, 20, 5120, Some(1280))
    );
    assert_eq!(c.vae.channels, vec![128, 256, 512, 512]);
    assert_eq!((c.vae.encoder_res_blocks, c.vae.decoder_res_blocks), (2, 3));

    let report = inspect(&path, HeadDims::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.parameters("UNet"), Some(2_567_463_684));
    assert_eq!(report.parameters("CLIP-L"), Some(123_060_480));
    assert_eq!(report.parameters("CLIP-G"), Some(694_659_840));
    assert_eq!(report.parameters("VAE"), Some(83_653_863));
    assert_eq!(
        report.unused,
        vec![
            "conditioner.embedders.0.transformer.text_model.embeddings.position_ids".to_string(),
            "conditioner.embedders.1.model.logit_scale".to_string()
        ]
    );
    let text = report.to_string();
    assert!(text.contains("2,567,463,684"), "{text}");
}

#[test]
fn full_size_refiner_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse_file(dir.path(), "refiner");
    let file = SdxlFile::open(&path, HeadDims::default()).unwrap();
    let c = &file.config;
    assert_eq!(c.architecture, Architecture::SdxlRefiner);
    assert!(c.clip_l.is_none());
    assert_eq!(c.unet.level_channels(), vec![384, 768, 1536, 1536]);
    assert_eq!(c.unet.transformer_depths(), vec![0, 4, 4, 0]);
    assert_eq!(c.unet.middle_depth(), 4);
    assert_eq!((c.unet.context_dim, c.unet.adm_in_channels), (1280, 2560));
    assert_eq!((c.time_id_dim, c.time_ids), (256, 5));
    assert!(file.require(Architecture::SdxlBase).is_err());

    let report = inspect(&path, HeadDims::default()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.parameters("UNet"), Some(2_259_526_660));
    assert_eq!(report.parameters("CLIP-G"), Some(694_659_840));
    assert_eq!(report.parameters("VAE"), Some(83_653_863));
    assert_eq!(report.parameters("CLIP-L"), None);
    assert_eq!(
        report.unused,
        vec!["conditioner.embedders.0.model.logit_scale".to_string()]
    );
}
