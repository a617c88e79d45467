//! kohya LoRA merging against `$FOOOCUS_FIXTURES/lora`: every merged weight, the merged text
//! encoders and UNet alone and along the whole text → ε path, the unmatched-key report, LoRAs
//! adding up, and the refusals (a checkpoint given as a LoRA, a LoRA made for another model).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use fooocus::nets::sdxl::file::{SdxlFile, SdxlWithLoras};
use fooocus::nets::sdxl::unet::adm_vector;
use fooocus::weights::backend::LoadMode;
use fooocus::weights::lora::{LoraFile, LoraReport};

use crate::common::{assert_close, fixtures, json, Tensors};

const WEIGHT_TOL: f32 = 1e-6;
const MODEL_TOL: f32 = 1e-4;
const REFERENCE: &str = "lora/lora_reference.safetensors";

fn spec() -> serde_json::Value {
    json("lora/lora.json")
}

fn strength() -> f64 {
    spec()["strength"].as_f64().expect("lora.json strength")
}

fn lora() -> Arc<LoraFile> {
    let name = spec()["lora_file"]
        .as_str()
        .expect("lora.json lora_file")
        .to_string();
    Arc::new(LoraFile::open(fixtures().join("lora").join(name)).unwrap())
}

fn base() -> SdxlFile {
    SdxlFile::open(
        fixtures().join("sdxl_base.safetensors"),
        crate::common::tiny_heads("base_unet_sgm"),
    )
    .unwrap()
}

fn refiner() -> SdxlFile {
    SdxlFile::open(
        fixtures().join("sdxl_refiner.safetensors"),
        crate::common::tiny_heads("refiner_unet_sgm"),
    )
    .unwrap()
}

/// The base with the fixture LoRA at the fixture strength, and its report.
fn merged_base() -> (SdxlWithLoras, LoraReport) {
    let (file, mut reports) = base().with_loras(&[(lora(), strength())]);
    assert_eq!(reports.len(), 1);
    (file, reports.remove(0))
}

/// The targeted single-file keys, once each (q/k/v share `in_proj_weight`).
fn targeted_keys() -> BTreeSet<String> {
    spec()["modules"]
        .as_object()
        .expect("lora.json modules")
        .values()
        .map(|m| m["key"].as_str().expect("module key").to_string())
        .collect()
}

fn check_merged_weights(file: &SdxlWithLoras, label: &str) {
    let r = Tensors::open(REFERENCE);
    let dev = Device::Cpu;
    for key in targeted_keys() {
        let original = file.file().checkpoint.load(&key, DType::F32, &dev).unwrap();
        assert_close(
            &format!("{label} original {key}"),
            &original,
            &r.get(&format!("original.{key}")),
            WEIGHT_TOL,
        );
        assert_close(
            &format!("{label} merged {key}"),
            &file.weight(&key, &dev).unwrap(),
            &r.get(&format!("merged.{key}")),
            WEIGHT_TOL,
        );
    }
}

#[test]
fn merged_weights_match_and_unmatched_keys_are_reported() {
    let (file, report) = merged_base();
    check_merged_weights(&file, "lora");
    let modules = spec()["modules"].as_object().unwrap().len();
    let unmatched: Vec<String> = spec()["unmatched_keys"]
        .as_array()
        .expect("lora.json unmatched_keys")
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut sorted = unmatched.clone();
    sorted.sort();
    assert_eq!(report.unmatched, sorted);
    assert_eq!(report.merged, modules);
    assert!(!report.skipped);
    assert_eq!(report.strength, strength());
}

/// Two LoRAs add up: the same file twice, at two strengths summing to the fixture's.
#[test]
fn loras_add_up() {
    let (s, lora) = (strength(), lora());
    let (file, reports) = base().with_loras(&[(lora.clone(), 0.25 * s), (lora, 0.75 * s)]);
    assert!(reports.iter().all(|r| !r.skipped));
    check_merged_weights(&file, "two LoRAs");
}

#[test]
fn merged_text_encoders_match() {
    let (file, _) = merged_base();
    let r = Tensors::open(REFERENCE);
    let dev = Device::Cpu;
    let (l, _) = file.clip_l(LoadMode::Real, &dev).unwrap().unwrap();
    let (g, _) = file.clip_g(LoadMode::Real, &dev).unwrap();
    let out_l = l.forward(&r.ids("ids_clip_l"), 2).unwrap();
    assert_close(
        "clip_l_penultimate",
        &out_l.hidden,
        &r.get("clip_l_penultimate"),
        MODEL_TOL,
    );
    let ids_g = r.ids("ids_clip_g");
    let out_g = g.forward(&ids_g, 2).unwrap();
    assert_close(
        "clip_g_penultimate",
        &out_g.hidden,
        &r.get("clip_g_penultimate"),
        MODEL_TOL,
    );
    assert_close(
        "text_embeds",
        &out_g.pooled.unwrap(),
        &r.get("text_embeds"),
        MODEL_TOL,
    );
    assert_close(
        "clip_g_last_hidden_state",
        &g.last_hidden_state(&ids_g).unwrap(),
        &r.get("clip_g_last_hidden_state"),
        MODEL_TOL,
    );
}

#[test]
fn merged_unet_alone_matches() {
    let (file, _) = merged_base();
    let r = Tensors::open(REFERENCE);
    let original = Tensors::open("reference/unet_base.safetensors");
    let (unet, _) = file.unet(LoadMode::Real, &Device::Cpu).unwrap();
    let eps = unet
        .forward(
            &r.get("unet_input"),
            &r.get("timestep"),
            &original.get("context"),
            &original.get("y"),
        )
        .unwrap();
    assert_close("eps_unet_only", &eps, &r.get("eps_unet_only"), MODEL_TOL);
}

/// Merged encoders → context and pooled (positive and negative prompt) → y → merged UNet → ε.
#[test]
fn merged_text_to_eps_path_matches() {
    let (file, _) = merged_base();
    let r = Tensors::open(REFERENCE);
    let prompts = json("reference/reference.json");
    let index = |k: &str| prompts[k].as_u64().expect("prompt index") as u32;
    let dev = Device::Cpu;
    let rows = Tensor::new(
        &[
            index("positive_prompt_index"),
            index("negative_prompt_index"),
        ],
        &dev,
    )
    .unwrap();
    let pick = |k: &str| r.ids(k).index_select(&rows, 0).unwrap();
    let (l, _) = file.clip_l(LoadMode::Real, &dev).unwrap().unwrap();
    let (g, _) = file.clip_g(LoadMode::Real, &dev).unwrap();
    let hidden_l = l.forward(&pick("ids_clip_l"), 2).unwrap().hidden;
    let out_g = g.forward(&pick("ids_clip_g"), 2).unwrap();
    let context = Tensor::cat(&[&hidden_l, &out_g.hidden], 2).unwrap();
    assert_close("context", &context, &r.get("context"), MODEL_TOL);
    let pooled = out_g.pooled.unwrap();
    assert_close("pooled", &pooled, &r.get("pooled"), MODEL_TOL);
    let y = adm_vector(&pooled, &r.get("time_ids"), file.file().config.time_id_dim).unwrap();
    assert_close("y", &y, &r.get("y"), MODEL_TOL);
    let (unet, _) = file.unet(LoadMode::Real, &dev).unwrap();
    let eps = unet
        .forward(&r.get("unet_input"), &r.get("timestep"), &context, &y)
        .unwrap();
    assert_close("eps", &eps, &r.get("eps"), MODEL_TOL);
    let sigma = r.get("sigma").to_vec1::<f32>().unwrap()[0] as f64;
    let denoised = (r.get("x") - (eps * sigma).unwrap()).unwrap();
    assert_close("denoised", &denoised, &r.get("denoised"), MODEL_TOL);
}

/// Building on paper reads no LoRA data and uses the same tensors as the plain file.
#[test]
fn meta_mode_works_with_loras() {
    let (file, _) = merged_base();
    let dev = Device::Cpu;
    let (_, merged) = file.unet(LoadMode::Meta, &dev).unwrap();
    let (_, plain) = file.file().unet(LoadMode::Meta, &dev).unwrap();
    assert_eq!(merged.used, plain.used);
    assert!(file.clip_l(LoadMode::Meta, &dev).unwrap().is_some());
    file.clip_g(LoadMode::Meta, &dev).unwrap();
}

#[test]
fn a_checkpoint_is_not_a_lora() {
    let path = fixtures().join("sdxl_base.safetensors");
    let err = LoraFile::open(&path).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not a LoRA"), "{err}");
    assert!(err.contains("SDXL base checkpoint"), "{err}");
}

/// The fixture LoRA's CLIP-L part matches nothing of the refiner (which has no CLIP-L): it is
/// left out with a report, and the refiner builds as without it.
#[test]
fn a_lora_for_another_model_is_skipped() {
    let all = candle_core::safetensors::load(
        fixtures()
            .join("lora")
            .join(spec()["lora_file"].as_str().unwrap()),
        &Device::Cpu,
    )
    .unwrap();
    let te1: HashMap<String, Tensor> = all
        .into_iter()
        .filter(|(k, _)| k.starts_with("lora_te1_"))
        .collect();
    assert!(!te1.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("te1_only.safetensors");
    candle_core::safetensors::save(&te1, &path).unwrap();
    let part = Arc::new(LoraFile::open(&path).unwrap());

    let refiner = refiner();
    let (file, reports) = refiner.with_loras(&[(part, strength())]);
    let mut expected: Vec<String> = te1.into_keys().collect();
    expected.sort();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].skipped);
    assert_eq!(reports[0].merged, 0);
    assert_eq!(reports[0].unmatched, expected);
    assert!(!file.has_patches());
    let dev = Device::Cpu;
    assert!(file.clip_l(LoadMode::Real, &dev).unwrap().is_none());
    file.clip_g(LoadMode::Real, &dev).unwrap();
    file.unet(LoadMode::Real, &dev).unwrap();
}

/// The diffusers spelling of an SGM UNet module path, by the fixed SDXL rule (levels of
/// `layers_per_block + 1` blocks; `sdxl-formats.md` §3.3), independent of the engine's walk.
fn diffusers_name(sgm: &str, per_level: usize) -> String {
    let res = |rest: &[&str]| {
        let renamed = match rest.get(..2) {
            Some(["in_layers", "0"]) => "norm1",
            Some(["in_layers", "2"]) => "conv1",
            Some(["emb_layers", "1"]) => "time_emb_proj",
            Some(["out_layers", "0"]) => "norm2",
            Some(["out_layers", "3"]) => "conv2",
            _ if rest.first() == Some(&"skip_connection") => return "conv_shortcut".to_string(),
            _ => panic!("no ResBlock weight {rest:?}"),
        };
        renamed.to_string()
    };
    let parts: Vec<&str> = sgm.split('.').collect();
    let n = |i: usize| parts[i].parse::<usize>().unwrap();
    match parts[0] {
        "time_embed" => format!("time_embedding.linear_{}", n(1) / 2 + 1),
        "label_emb" => format!("add_embedding.linear_{}", n(2) / 2 + 1),
        "out" => ["conv_norm_out", "conv_out"][n(1) / 2].to_string(),
        "input_blocks" if n(1) == 0 => "conv_in".to_string(),
        "middle_block" => match n(1) {
            1 => format!("mid_block.attentions.0.{}", parts[2..].join(".")),
            j => format!("mid_block.resnets.{}.{}", j / 2, res(&parts[2..])),
        },
        "input_blocks" | "output_blocks" => {
            let down = parts[0] == "input_blocks";
            let i = if down { n(1) - 1 } else { n(1) };
            let (block, layer) = (i / per_level, i % per_level);
            let path = if down { "down_blocks" } else { "up_blocks" };
            let rest = &parts[3..];
            match (n(2), rest.first()) {
                (0, Some(&"op")) => format!("{path}.{block}.downsamplers.0.conv"),
                (0, _) => format!("{path}.{block}.resnets.{layer}.{}", res(rest)),
                (_, Some(&"conv")) => format!("{path}.{block}.upsamplers.0.conv"),
                _ => format!("{path}.{block}.attentions.{layer}.{}", rest.join(".")),
            }
        }
        other => panic!("no diffusers rule for {other}"),
    }
}

/// kohya LoRAs written with diffusers UNet paths (`lora_unet_down_blocks_…`) merge the same.
#[test]
fn diffusers_spelled_unet_names_merge_the_same() {
    let cfg = json("tiny_configs.json");
    let per_level = cfg["base_unet_diffusers"]["layers_per_block"]
        .as_u64()
        .unwrap() as usize
        + 1;
    let spec = spec();
    let lora_path = fixtures()
        .join("lora")
        .join(spec["lora_file"].as_str().unwrap());
    let mut tensors = candle_core::safetensors::load(&lora_path, &Device::Cpu).unwrap();
    let mut renamed = 0;
    for (module, m) in spec["modules"].as_object().unwrap() {
        let key = m["key"].as_str().unwrap();
        let Some(sgm) = key
            .strip_prefix("model.diffusion_model.")
            .and_then(|k| k.strip_suffix(".weight"))
        else {
            continue;
        };
        let name = format!(
            "lora_unet_{}",
            diffusers_name(sgm, per_level).replace('.', "_")
        );
        for part in [".lora_down.weight", ".lora_up.weight", ".alpha"] {
            if let Some(t) = tensors.remove(&format!("{module}{part}")) {
                tensors.insert(format!("{name}{part}"), t);
            }
        }
        renamed += 1;
    }
    assert!(renamed > 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("diffusers_names.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let lora = Arc::new(LoraFile::open(&path).unwrap());
    let (file, reports) = base().with_loras(&[(lora, strength())]);
    assert_eq!(
        reports[0].merged,
        spec["modules"].as_object().unwrap().len()
    );
    assert_eq!(
        reports[0].unmatched.len(),
        spec["unmatched_keys"].as_array().unwrap().len()
    );
    check_merged_weights(&file, "diffusers names");
}

/// A rank-1 module for every UNet weight of the base, once spelled SGM and once diffusers: all
/// of them match (ResBlocks, attention, down/upsamplers, embeddings, in/out convolutions).
#[test]
fn every_unet_weight_is_reachable_in_both_spellings() {
    let cfg = json("tiny_configs.json");
    let per_level = cfg["base_unet_diffusers"]["layers_per_block"]
        .as_u64()
        .unwrap() as usize
        + 1;
    let base = base();
    let dev = Device::Cpu;
    let mut tensors = HashMap::new();
    let mut modules = 0;
    for key in base.checkpoint.names_under("model.diffusion_model") {
        let shape = base.checkpoint.shape(key).unwrap().to_vec();
        let Some(sgm) = key
            .strip_prefix("model.diffusion_model.")
            .and_then(|k| k.strip_suffix(".weight"))
        else {
            continue;
        };
        if shape.len() < 2 {
            continue;
        }
        let mut down = shape.clone();
        down[0] = 1;
        let mut up = vec![1; shape.len()];
        up[0] = shape[0];
        for path in [sgm.to_string(), diffusers_name(sgm, per_level)] {
            let name = format!("lora_unet_{}", path.replace('.', "_"));
            let zeros = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
            tensors.insert(format!("{name}.lora_down.weight"), zeros(&down));
            tensors.insert(format!("{name}.lora_up.weight"), zeros(&up));
            modules += 1;
        }
    }
    assert_eq!(tensors.len(), 2 * modules, "two weights spelled alike");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("every_weight.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let lora = Arc::new(LoraFile::open(&path).unwrap());
    let (_, reports) = base.with_loras(&[(lora, 1.0)]);
    assert_eq!(reports[0].unmatched, Vec::<String>::new());
    assert_eq!(reports[0].merged, modules);
}

/// Fooocus's rule: a LoRA with more than 12 tensors that match nothing is left out of the model;
/// with 12 it is merged.
#[test]
fn more_than_twelve_unmatched_tensors_leave_the_lora_out() {
    let spec = spec();
    let lora_path = fixtures()
        .join("lora")
        .join(spec["lora_file"].as_str().unwrap());
    let fixture = candle_core::safetensors::load(&lora_path, &Device::Cpu).unwrap();
    let already = spec["unmatched_keys"].as_array().unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    for unmatched in [12, 13] {
        let mut tensors = fixture.clone();
        let one = Tensor::zeros((1, 1), DType::F32, &Device::Cpu).unwrap();
        for i in already..unmatched {
            tensors.insert(
                format!("lora_unet_nothing_{i}.lora_down.weight"),
                one.clone(),
            );
        }
        let path = dir
            .path()
            .join(format!("unmatched_{unmatched}.safetensors"));
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let lora = Arc::new(LoraFile::open(&path).unwrap());
        let (file, reports) = base().with_loras(&[(lora, strength())]);
        assert_eq!(reports[0].unmatched.len(), unmatched);
        assert_eq!(reports[0].skipped, unmatched > 12);
        assert_eq!(file.has_patches(), unmatched <= 12);
    }
}

/// A module with parts beyond lora_down/lora_up/alpha (here a LoCon `lora_mid`) is not merged
/// half-understood: all its tensors are reported unmatched and the rest still merges.
#[test]
fn modules_with_unsupported_parts_are_reported() {
    let spec = spec();
    let lora_path = fixtures()
        .join("lora")
        .join(spec["lora_file"].as_str().unwrap());
    let mut tensors = candle_core::safetensors::load(&lora_path, &Device::Cpu).unwrap();
    let modules = spec["modules"].as_object().unwrap();
    let (module, info) = modules.iter().next().unwrap();
    let rank = info["rank"].as_u64().unwrap() as usize;
    let mid = format!("{module}.lora_mid.weight");
    let zeros = Tensor::zeros((rank, rank, 1, 1), DType::F32, &Device::Cpu).unwrap();
    tensors.insert(mid.clone(), zeros);
    let mut expected: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with(&format!("{module}.")))
        .cloned()
        .chain(
            spec["unmatched_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        )
        .collect();
    expected.sort();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locon.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let lora = Arc::new(LoraFile::open(&path).unwrap());
    let (_, reports) = base().with_loras(&[(lora, strength())]);
    assert!(reports[0].unmatched.contains(&mid));
    assert_eq!(reports[0].unmatched, expected);
    assert_eq!(reports[0].merged, modules.len() - 1);
}
