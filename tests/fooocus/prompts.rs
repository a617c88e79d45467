//! Fooocus prompt chunking on long prompts: chunk ids, per-chunk encoder states, the
//! concatenated context and the pooled vector of the first chunk.

use candle_core::{Device, Tensor};
use fooocus::nets::sdxl::clip::ClipTextModel;
use fooocus::nets::sdxl::file::SdxlFile;
use fooocus::nets::sdxl::text::TextEncoders;
use fooocus::nets::sdxl::tokenizer::{ClipTokenizer, Pad};
use fooocus::weights::backend::LoadMode;

use crate::common::{assert_close, fixtures, json, Tensors};

const MODULE_TOL: f32 = 1e-4;

fn usize_of(v: &serde_json::Value) -> usize {
    v.as_u64().expect("a count") as usize
}

/// The tiny base checkpoint's CLIP-L and CLIP-G.
fn base_text_models() -> (ClipTextModel, ClipTextModel) {
    let base = SdxlFile::open(
        fixtures().join("sdxl_base.safetensors"),
        crate::common::tiny_heads("base_unet_sgm"),
    )
    .unwrap();
    let l = base
        .clip_l(LoadMode::Real, &Device::Cpu)
        .unwrap()
        .unwrap()
        .0;
    let g = base.clip_g(LoadMode::Real, &Device::Cpu).unwrap().0;
    (l, g)
}

#[test]
fn fooocus_prompt_chunks_match() {
    let spec = json("fooocus/fooocus.json");
    let chunks_ref = Tensors::open("fooocus/prompt_chunks.safetensors");
    let tok = ClipTokenizer::from_file(fixtures().join("tokenizer/clip-tokenizer.json")).unwrap();
    let (l, g) = base_text_models();
    let encoders = TextEncoders {
        clip_l: Some(&l),
        clip_g: &g,
    };
    let prompts = spec["prompt_chunks"]["prompts"].as_object().unwrap();
    assert!(!prompts.is_empty());
    for (name, p) in prompts {
        let prompt = p["prompt"].as_str().unwrap();
        let chunks = tok.chunks(prompt).unwrap();
        let ids_l: Vec<Vec<u32>> = chunks.iter().map(|c| c.ids(Pad::EndOfText)).collect();
        let ids_g: Vec<Vec<u32>> = chunks.iter().map(|c| c.ids(Pad::Zero)).collect();
        assert_eq!(
            ids_l,
            chunks_ref
                .ids(&format!("{name}.ids_clip_l"))
                .to_vec2::<u32>()
                .unwrap(),
            "{name}"
        );
        assert_eq!(
            ids_g,
            chunks_ref
                .ids(&format!("{name}.ids_clip_g"))
                .to_vec2::<u32>()
                .unwrap(),
            "{name}"
        );
        let counts: Vec<usize> = p["chunk_token_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(usize_of)
            .collect();
        let ours: Vec<usize> = chunks.iter().map(|c| c.len() - 2).collect();
        assert_eq!(ours, counts, "{name} chunk token counts");

        let ids = Tensor::new(ids_l, &Device::Cpu).unwrap();
        let pen_l = l.forward(&ids, 2).unwrap().hidden;
        assert_close(
            &format!("{name} CLIP-L chunks"),
            &pen_l,
            &chunks_ref.get(&format!("{name}.clip_l_penultimate")),
            MODULE_TOL,
        );
        let ids = Tensor::new(ids_g, &Device::Cpu).unwrap();
        let pen_g = g.forward(&ids, 2).unwrap().hidden;
        assert_close(
            &format!("{name} CLIP-G chunks"),
            &pen_g,
            &chunks_ref.get(&format!("{name}.clip_g_penultimate")),
            MODULE_TOL,
        );

        let cond = encoders.encode(&tok, prompt, 2).unwrap();
        assert_close(
            &format!("{name} context"),
            &cond.context,
            &chunks_ref.get(&format!("{name}.context")),
            MODULE_TOL,
        );
        assert_close(
            &format!("{name} pooled"),
            &cond.pooled,
            &chunks_ref.get(&format!("{name}.pooled")),
            MODULE_TOL,
        );
    }
}

/// Encoding asks whether to go on before every chunk, and stops at the first "no": a Stop during
/// a long prompt takes effect within one chunk.
#[test]
fn encoding_can_be_interrupted_between_chunks() {
    let spec = json("fooocus/fooocus.json");
    let tok = ClipTokenizer::from_file(fixtures().join("tokenizer/clip-tokenizer.json")).unwrap();
    let (l, g) = base_text_models();
    let encoders = TextEncoders {
        clip_l: Some(&l),
        clip_g: &g,
    };
    // The longest fixture prompt, repeated: many chunks.
    let longest = spec["prompt_chunks"]["prompts"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p["prompt"].as_str().unwrap().to_owned())
        .max_by_key(String::len)
        .unwrap();
    let chunks = tok.chunks(&[longest.as_str(); 6].join(" ")).unwrap();
    assert!(chunks.len() >= 6, "{} chunks", chunks.len());
    let asked = std::cell::Cell::new(0usize);
    let stop_at = 3;
    let interrupted = || {
        asked.set(asked.get() + 1);
        asked.get() >= stop_at
    };
    let err = encoders
        .encode_chunks(&chunks, 2, &interrupted)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(fooocus::nets::sdxl::text::INTERRUPTED),
        "{err}"
    );
    // Two chunks were encoded, the third was not started.
    assert_eq!(asked.get(), stop_at);
    let asked_all = std::cell::Cell::new(0usize);
    let never = || {
        asked_all.set(asked_all.get() + 1);
        false
    };
    encoders.encode_chunks(&chunks, 2, &never).unwrap();
    // Once per chunk and encoder (CLIP-L and CLIP-G).
    assert_eq!(asked_all.get(), 2 * chunks.len());
}
