//! What an A1111 request means here: every field the client sends wins, a field it leaves out
//! takes the server preset's value (so a minimal request still gets Fooocus' refiner, styles,
//! sharpness and negative ADM guidance). Names are mapped both ways: A1111's sampler names (also
//! with a schedule suffix, `"DPM++ 2M Karras"`) and schedule names or labels to ours; unknown
//! samplers fall back to the preset's, as A1111 falls back to its default; unknown style names
//! are dropped, as A1111 drops them.

use serde_json::Value;

use super::wire::GenerationRequest;
use crate::pipeline::request::GenerateRequest;
use crate::pipeline::styles::StyleLibrary;
use crate::sampling::Sampler;
use crate::store::a1111::{a1111_sampler_name, fooocus_sampler_name};

/// A1111's schedule types: (name, label, ours). `automatic` is "the preset's".
pub const SCHEDULES: [(&str, &str, Option<&str>); 8] = [
    ("automatic", "Automatic", None),
    ("normal", "Normal", Some("normal")),
    ("karras", "Karras", Some("karras")),
    ("exponential", "Exponential", Some("exponential")),
    (
        "polyexponential",
        "Polyexponential",
        Some("polyexponential"),
    ),
    ("sgm_uniform", "SGM Uniform", Some("sgm_uniform")),
    ("simple", "Simple", Some("simple")),
    ("ddim", "DDIM", Some("ddim_uniform")),
];

/// img2img's denoising strength when the client sends none (A1111's default).
pub const DEFAULT_DENOISE: f64 = 0.75;

/// The A1111 side's size when a client sends only one of width and height (A1111's default).
const DEFAULT_SIDE: u32 = 512;

/// A schedule given by A1111 name, label or our name: `Some(None)` is "automatic".
fn schedule(text: &str) -> Option<Option<&'static str>> {
    let t = text.trim();
    SCHEDULES
        .iter()
        .find(|(name, label, ours)| {
            name.eq_ignore_ascii_case(t)
                || label.eq_ignore_ascii_case(t)
                || ours.is_some_and(|o| o.eq_ignore_ascii_case(t))
        })
        .map(|(_, _, ours)| *ours)
}

/// Our sampler for an A1111 name (or one of ours), if we run it.
fn sampler(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("k_").unwrap_or(t);
    [fooocus_sampler_name(t), t.to_ascii_lowercase()]
        .into_iter()
        .find(|name| name.parse::<Sampler>().is_ok())
        .or_else(|| match t {
            "euler_a" => Some("euler_ancestral".into()),
            _ => None,
        })
}

/// `(sampler, scheduler)` for A1111's sampler and scheduler fields: a name ending in a schedule
/// (`"DPM++ 2M Karras"`) carries it; `None` is "the preset's".
pub fn sampler_and_schedule(
    name: Option<&str>,
    scheduler: Option<&str>,
) -> (Option<String>, Option<String>) {
    let mut chosen_schedule = scheduler.and_then(schedule).flatten();
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return (None, chosen_schedule.map(String::from));
    };
    if let Some(found) = sampler(name) {
        return (Some(found), chosen_schedule.map(String::from));
    }
    for (a1111, label, ours) in SCHEDULES {
        for suffix in [a1111, label] {
            let head = name.len().checked_sub(suffix.len() + 1).and_then(|cut| {
                let tail = name.get(cut..)?.strip_prefix(' ')?;
                tail.eq_ignore_ascii_case(suffix).then(|| &name[..cut])
            });
            if let Some(head) = head {
                if chosen_schedule.is_none() {
                    chosen_schedule = ours;
                }
                return (sampler(head), chosen_schedule.map(String::from));
            }
        }
    }
    (None, chosen_schedule.map(String::from))
}

/// The A1111 name of one of our samplers.
pub fn a1111_sampler(ours: &str) -> String {
    a1111_sampler_name(ours).to_string()
}

/// A seed as A1111 takes it: `-1`, `""`, `null` or any negative number is random; a whole
/// float or a numeric string is that number.
fn seed(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
}

/// The request an A1111 `txt2img` or `img2img` body makes; `base_model` is the checkpoint the
/// API has selected (`POST options`), named by file. Style names we lack are dropped.
pub fn generate_request(
    r: &GenerationRequest,
    base_model: Option<String>,
    styles: &StyleLibrary,
) -> GenerateRequest {
    let overrides = r.override_settings.clone().unwrap_or_default();
    let input = r.init_images.as_ref().and_then(|i| i.first().cloned());
    let (sampler, scheduler) = sampler_and_schedule(
        r.sampler_name.as_deref().or(r.sampler_index.as_deref()),
        r.scheduler.as_deref(),
    );
    let (width, height) = match (r.width, r.height) {
        (None, None) => (None, None),
        (w, h) => (
            Some(w.unwrap_or(DEFAULT_SIDE)),
            Some(h.unwrap_or(DEFAULT_SIDE)),
        ),
    };
    let images = match (r.batch_size, r.n_iter) {
        (None, None) => None,
        (b, n) => Some(b.unwrap_or(1).saturating_mul(n.unwrap_or(1))),
    };
    let clip_skip = r.clip_skip.or_else(|| {
        overrides
            .get("CLIP_stop_at_last_layers")
            .and_then(super::wire::whole_number)
            .map(|v| v as usize)
    });
    let refiner_model = r.refiner_checkpoint.as_deref().map(|name| {
        match name.trim() {
            "" => "None",
            n if n.eq_ignore_ascii_case("none") => "None",
            n => strip_title(n),
        }
        .to_string()
    });
    GenerateRequest {
        prompt: r.prompt.clone().unwrap_or_default(),
        negative_prompt: r.negative_prompt.clone(),
        styles: r.styles.as_ref().map(|names| {
            names
                .iter()
                .filter_map(|n| styles.find(n).map(|s| s.name.clone()))
                .collect()
        }),
        width,
        height,
        image_number: images,
        seed: seed(r.seed.as_ref()),
        base_model,
        refiner_model,
        refiner_switch: r.refiner_switch_at,
        guidance_scale: r.cfg_scale,
        sampler,
        scheduler,
        steps: r.steps,
        clip_skip,
        denoise: input
            .is_some()
            .then(|| r.denoising_strength.unwrap_or(DEFAULT_DENOISE)),
        input_image: input,
        ..GenerateRequest::default()
    }
}

/// A model named by its A1111 title (`"name [hash]"`) or by its name.
pub fn strip_title(title: &str) -> &str {
    match title.rsplit_once(" [") {
        Some((name, hash)) if hash.ends_with(']') => name,
        _ => title,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_names_map_like_a1111() {
        let pair = |n: &str, s: Option<&str>| sampler_and_schedule(Some(n), s);
        assert_eq!(
            pair("DPM++ 2M SDE Karras", None),
            (Some("dpmpp_2m_sde_gpu".into()), Some("karras".into()))
        );
        assert_eq!(
            pair("Euler a", Some("automatic")),
            (Some("euler_ancestral".into()), None)
        );
        assert_eq!(
            pair("DDIM", Some("normal")),
            (Some("ddim".into()), Some("normal".into()))
        );
        assert_eq!(pair("k_euler", Some("Karras")).0, Some("euler".into()));
        assert_eq!(
            pair("dpmpp_2m", Some("ddim")).1,
            Some("ddim_uniform".into())
        );
        // Unknown: the preset's sampler, as A1111 falls back to its default.
        assert_eq!(pair("Wobbly Sampler 9", None), (None, None));
        assert_eq!(pair("DPM fast", None).0, None);
        // A cut inside a multi-byte character is no schedule suffix (and no panic).
        assert_eq!(pair("éddi", None), (None, None));
        assert_eq!(pair("Euler a Karrasé", None), (None, None));
    }

    #[test]
    fn titles_name_models() {
        assert_eq!(
            strip_title("sd_xl_base_1.0.safetensors [31e35c80fc]"),
            "sd_xl_base_1.0.safetensors"
        );
        assert_eq!(strip_title("plain.safetensors"), "plain.safetensors");
    }

    #[test]
    fn seeds_read_like_a1111() {
        assert_eq!(seed(Some(&Value::from(-1))), None);
        assert_eq!(seed(Some(&Value::from(""))), None);
        assert_eq!(seed(Some(&Value::Null)), None);
        assert_eq!(seed(Some(&Value::from(1234))), Some(1234));
        assert_eq!(seed(Some(&Value::from(1234.0))), Some(1234));
        assert_eq!(seed(Some(&Value::from("77"))), Some(77));
    }
}
