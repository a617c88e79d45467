//! The A1111 `parameters` text (the format most tools read) from [`ImageMetadata`], and a parser
//! back.
//!
//! Layout: the prompt (verbatim, may span lines); `Negative prompt: <text>` when there is one; a
//! last line of `Key: value` pairs joined by `", "`, values holding `,` `:` or a newline
//! JSON-quoted. Keys, in order:
//!
//! `Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model hash, Model, Clip skip (if > 1),
//! VAE, Refiner, Refiner hash, Refiner switch at, Lora hashes, Lora weights, Styles, Performance,
//! Scheduler, Sharpness, ADM Guidance, Adaptive CFG, Version`.
//!
//! The first block is A1111's own (sampler under its A1111 name, schedule as A1111 1.9+ writes
//! it); `Scheduler`, `Sharpness`, `ADM Guidance`, `Adaptive CFG`, `Performance`, `Styles`,
//! `Refiner hash`, `Lora weights` are the keys Fooocus' own A1111 reader understands.
//!
//! Round trip is exact except: model, refiner, VAE and LoRA names come back as stems (no folder or
//! extension); `*_gpu` and plain sampler variants share an A1111 name and come back as the `_gpu`
//! one (they sample identically here); `refiner_switch` is carried only with a refiner;
//! `output_format` and `extra` are not carried.

use super::metadata::{model_stem, ImageMetadata, LoraEntry};

/// Fooocus sampler name → A1111 sampler name (behaviour reference §8.1, plus A1111's names for
/// the 3M SDE and 2M SDE Heun samplers). Unlisted samplers keep their Fooocus name.
const SAMPLERS: [(&str, &str); 23] = [
    ("euler", "Euler"),
    ("euler_ancestral", "Euler a"),
    ("heun", "Heun"),
    ("dpm_2", "DPM2"),
    ("dpm_2_ancestral", "DPM2 a"),
    ("lms", "LMS"),
    ("dpm_fast", "DPM fast"),
    ("dpm_adaptive", "DPM adaptive"),
    ("dpmpp_2s_ancestral", "DPM++ 2S a"),
    ("dpmpp_sde", "DPM++ SDE"),
    ("dpmpp_sde_gpu", "DPM++ SDE"),
    ("dpmpp_2m", "DPM++ 2M"),
    ("dpmpp_2m_sde", "DPM++ 2M SDE"),
    ("dpmpp_2m_sde_gpu", "DPM++ 2M SDE"),
    ("dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
    ("dpmpp_2m_sde_heun_gpu", "DPM++ 2M SDE Heun"),
    ("dpmpp_3m_sde", "DPM++ 3M SDE"),
    ("dpmpp_3m_sde_gpu", "DPM++ 3M SDE"),
    ("lcm", "LCM"),
    ("tcd", "TCD"),
    ("restart", "Restart"),
    ("ddim", "DDIM"),
    ("uni_pc", "UniPC"),
];

/// Fooocus scheduler name → A1111 `Schedule type` label.
const SCHEDULERS: [(&str, &str); 8] = [
    ("normal", "Normal"),
    ("karras", "Karras"),
    ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"),
    ("sgm_uniform", "SGM Uniform"),
    ("simple", "Simple"),
    ("ddim_uniform", "DDIM"),
    ("align_your_steps", "Align Your Steps"),
];

/// The A1111 name of a Fooocus sampler (the Fooocus name itself when A1111 has none).
pub fn a1111_sampler_name(sampler: &str) -> &str {
    SAMPLERS
        .iter()
        .find(|(ours, _)| *ours == sampler)
        .map_or(sampler, |(_, theirs)| theirs)
}

/// The Fooocus sampler for an A1111 name; `_gpu` variants win where both share a name (as in
/// Fooocus). Unknown names are returned unchanged.
pub fn fooocus_sampler_name(a1111: &str) -> String {
    SAMPLERS
        .iter()
        .rev()
        .find(|(_, theirs)| *theirs == a1111)
        .map_or(a1111, |(ours, _)| ours)
        .to_string()
}

/// The A1111 `Schedule type` label of a Fooocus scheduler (unchanged when unknown).
pub fn a1111_schedule_label(scheduler: &str) -> &str {
    SCHEDULERS
        .iter()
        .find(|(ours, _)| *ours == scheduler)
        .map_or(scheduler, |(_, theirs)| theirs)
}

fn fooocus_scheduler_name(label: &str) -> Option<String> {
    SCHEDULERS
        .iter()
        .find(|(ours, theirs)| *theirs == label || *ours == label)
        .map(|(ours, _)| ours.to_string())
}

/// `x` as Python prints a float: `7.0`, `0.3`, `1.25`.
pub(crate) fn fmt_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// A1111's quoting: values with `,`, `:` or a newline become JSON strings.
fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n']) {
        serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

fn short(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// The A1111 `parameters` text for `m`.
pub fn to_a1111(m: &ImageMetadata) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("Steps", m.steps.to_string()),
        ("Sampler", a1111_sampler_name(&m.sampler).to_string()),
        (
            "Schedule type",
            a1111_schedule_label(&m.scheduler).to_string(),
        ),
        ("CFG scale", fmt_float(m.guidance_scale)),
        ("Seed", m.seed.to_string()),
        ("Size", format!("{}x{}", m.width, m.height)),
    ];
    if let Some(h) = &m.base_model_hash {
        pairs.push(("Model hash", short(h).to_string()));
    }
    if !m.base_model.is_empty() {
        pairs.push(("Model", model_stem(&m.base_model).to_string()));
    }
    if m.clip_skip > 1 {
        pairs.push(("Clip skip", m.clip_skip.to_string()));
    }
    if let Some(vae) = &m.vae {
        pairs.push(("VAE", model_stem(vae).to_string()));
    }
    if let Some(refiner) = &m.refiner_model {
        pairs.push(("Refiner", model_stem(refiner).to_string()));
        if let Some(h) = &m.refiner_model_hash {
            pairs.push(("Refiner hash", short(h).to_string()));
        }
        pairs.push(("Refiner switch at", fmt_float(m.refiner_switch)));
    }
    let hashes: Vec<String> = m
        .loras
        .iter()
        .filter_map(|l| {
            Some(format!(
                "{}: {}",
                model_stem(&l.name),
                short(l.hash.as_ref()?)
            ))
        })
        .collect();
    if !hashes.is_empty() {
        pairs.push(("Lora hashes", hashes.join(", ")));
    }
    if !m.loras.is_empty() {
        let weights: Vec<String> = m
            .loras
            .iter()
            .map(|l| format!("{}: {}", model_stem(&l.name), fmt_float(l.weight)))
            .collect();
        pairs.push(("Lora weights", weights.join(", ")));
    }
    if !m.styles.is_empty() {
        pairs.push(("Styles", python_list(&m.styles)));
    }
    if !m.performance.is_empty() {
        pairs.push(("Performance", m.performance.clone()));
    }
    pairs.push(("Scheduler", m.scheduler.clone()));
    pairs.push(("Sharpness", fmt_float(m.sharpness)));
    pairs.push((
        "ADM Guidance",
        format!(
            "({}, {}, {})",
            fmt_float(m.adm_scaler_positive),
            fmt_float(m.adm_scaler_negative),
            fmt_float(m.adm_scaler_end)
        ),
    ));
    pairs.push(("Adaptive CFG", fmt_float(m.adaptive_cfg)));
    if !m.version.is_empty() {
        pairs.push(("Version", m.version.clone()));
    }

    let last: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect();
    let mut out = m.prompt.clone();
    if !m.negative_prompt.is_empty() {
        out.push_str("\nNegative prompt: ");
        out.push_str(&m.negative_prompt);
    }
    out.push('\n');
    out.push_str(&last.join(", "));
    out
}

/// Splits a parameter line into `(key, value)` pairs the way A1111's reader does: keys start with
/// a word character and hold word characters, spaces, `-` and `/`; quoted values are JSON strings.
/// Malformed stretches are skipped up to the next comma.
pub fn parse_pairs(line: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = line.trim_end_matches(['\r', '\n']);
    while !rest.is_empty() {
        rest = rest.trim_start();
        let Some(colon) = rest.find(':') else { break };
        let key = &rest[..colon];
        let key_ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
            && key
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '-' | '/'));
        if !key_ok {
            rest = skip_past_comma(rest);
            continue;
        }
        let after = rest[colon + 1..].trim_start();
        let (value, tail) = if after.starts_with('"') {
            match quoted_end(after) {
                Some(end) => {
                    let raw = &after[..end];
                    let value = serde_json::from_str::<String>(raw)
                        .unwrap_or_else(|_| raw[1..raw.len() - 1].to_string());
                    (value, &after[end..])
                }
                None => (after.to_string(), ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim_end().to_string(), &after[end..])
        };
        pairs.push((key.trim().to_string(), value));
        rest = skip_past_comma(tail);
    }
    pairs
}

/// The byte index just past the closing quote of the JSON string `s` starts with.
fn quoted_end(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn skip_past_comma(s: &str) -> &str {
    s.find(',').map_or("", |i| &s[i + 1..])
}

fn parse_name_list(value: &str) -> Vec<(String, String)> {
    value
        .split(", ")
        .filter_map(|item| {
            let (name, v) = item.rsplit_once(':')?;
            Some((name.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// A list of strings as Python prints it (`['Fooocus V2', 'Fooocus Sharp']`), as Fooocus writes
/// `Styles`.
fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("'{}'", item.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// Reads a list of strings written as JSON or as a Python list (either quote, `\` escapes).
fn parse_styles(value: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(value) {
        return list;
    }
    let mut items = Vec::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            continue;
        }
        let mut item = String::new();
        while let Some(d) = chars.next() {
            match d {
                '\\' => item.extend(chars.next()),
                _ if d == c => break,
                _ => item.push(d),
            }
        }
        items.push(item);
    }
    items
}

/// Parses A1111 `parameters` text. `None` when the last line is not a parameter line (fewer than
/// three `Key: value` pairs, as A1111 requires). Missing keys take [`ImageMetadata::default`]
/// values, except `Clip skip` (missing means 1) and `Version` (missing means empty).
pub fn parse_a1111(text: &str) -> Option<ImageMetadata> {
    let text = text.trim_end_matches(['\n', '\r']);
    let (head, last) = text.rsplit_once('\n').unwrap_or(("", text));
    let pairs = parse_pairs(last);
    if pairs.len() < 3 {
        return None;
    }

    let mut m = ImageMetadata {
        clip_skip: 1,
        version: String::new(),
        ..ImageMetadata::default()
    };
    let lines: Vec<&str> = if text.contains('\n') {
        head.split('\n').collect()
    } else {
        Vec::new()
    };
    match lines.iter().position(|l| l.starts_with("Negative prompt:")) {
        Some(i) => {
            m.prompt = lines[..i].join("\n");
            let first = &lines[i]["Negative prompt:".len()..];
            let first = first.strip_prefix(' ').unwrap_or(first);
            let mut negative = vec![first];
            negative.extend_from_slice(&lines[i + 1..]);
            m.negative_prompt = negative.join("\n");
        }
        None => m.prompt = lines.join("\n"),
    }

    let mut schedule_type: Option<String> = None;
    let mut fooocus_scheduler: Option<String> = None;
    let mut lora_hashes: Vec<(String, String)> = Vec::new();
    let mut lora_weights: Vec<(String, String)> = Vec::new();
    for (key, value) in &pairs {
        let v = value.as_str();
        match key.as_str() {
            "Steps" => m.steps = v.parse().unwrap_or(m.steps),
            "Sampler" => {
                let mut name = v;
                for (suffix, scheduler) in [(" Karras", "karras"), (" Exponential", "exponential")]
                {
                    if let Some(stripped) = name.strip_suffix(suffix) {
                        name = stripped;
                        schedule_type.get_or_insert_with(|| scheduler.to_string());
                    }
                }
                m.sampler = fooocus_sampler_name(name);
            }
            "Schedule type" => {
                if let Some(s) = fooocus_scheduler_name(v) {
                    schedule_type = Some(s);
                }
            }
            "Scheduler" => fooocus_scheduler = Some(v.to_string()),
            "CFG scale" => m.guidance_scale = v.parse().unwrap_or(m.guidance_scale),
            "Seed" => m.seed = v.parse().unwrap_or(m.seed),
            "Size" => {
                if let Some((w, h)) = v.split_once('x') {
                    if let (Ok(w), Ok(h)) = (w.trim().parse(), h.trim().parse()) {
                        m.width = w;
                        m.height = h;
                    }
                }
            }
            "Model hash" => m.base_model_hash = Some(v.to_string()),
            "Model" => m.base_model = v.to_string(),
            "Clip skip" => m.clip_skip = v.parse().unwrap_or(m.clip_skip),
            "VAE" => m.vae = Some(v.to_string()),
            "Refiner" => {
                // A1111 writes `name [hash]`; Fooocus and we write the name alone.
                match v.rsplit_once(" [") {
                    Some((name, hash)) if hash.ends_with(']') => {
                        m.refiner_model = Some(name.to_string());
                        m.refiner_model_hash = Some(hash.trim_end_matches(']').to_string());
                    }
                    _ => m.refiner_model = Some(v.to_string()),
                }
            }
            "Refiner hash" => m.refiner_model_hash = Some(v.to_string()),
            "Refiner switch at" => m.refiner_switch = v.parse().unwrap_or(m.refiner_switch),
            "Lora hashes" => lora_hashes = parse_name_list(v),
            "Lora weights" => lora_weights = parse_name_list(v),
            "Styles" => m.styles = parse_styles(v),
            "Performance" => m.performance = v.to_string(),
            "Sharpness" => m.sharpness = v.parse().unwrap_or(m.sharpness),
            "ADM Guidance" => {
                let parts: Vec<f64> = v
                    .trim_matches(['(', ')', ' '])
                    .split(',')
                    .filter_map(|s| s.trim().parse().ok())
                    .collect();
                if let [p, n, e] = parts[..] {
                    m.adm_scaler_positive = p;
                    m.adm_scaler_negative = n;
                    m.adm_scaler_end = e;
                }
            }
            "Adaptive CFG" => m.adaptive_cfg = v.parse().unwrap_or(m.adaptive_cfg),
            "Version" => m.version = v.to_string(),
            _ => {}
        }
    }
    if let Some(s) = fooocus_scheduler.or(schedule_type) {
        m.scheduler = s;
    }

    for (name, weight) in &lora_weights {
        m.loras.push(LoraEntry {
            name: name.clone(),
            hash: None,
            weight: weight.parse().unwrap_or(1.0),
        });
    }
    for (name, hash) in lora_hashes {
        match m.loras.iter_mut().find(|l| l.name == name) {
            Some(l) => l.hash = Some(hash),
            None => m.loras.push(LoraEntry {
                name,
                hash: Some(hash),
                weight: 1.0,
            }),
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageMetadata {
        ImageMetadata {
            prompt: "a cat on a sofa, (soft light:1.2)\nsecond line".into(),
            negative_prompt: "blurry, \"bad\"".into(),
            styles: vec!["Fooocus V2".into(), "Fooocus Enhance".into()],
            performance: "Speed".into(),
            steps: 30,
            sampler: "dpmpp_2m_sde_gpu".into(),
            scheduler: "karras".into(),
            guidance_scale: 4.0,
            sharpness: 2.5,
            adm_scaler_positive: 1.5,
            adm_scaler_negative: 0.8,
            adm_scaler_end: 0.3,
            adaptive_cfg: 7.0,
            clip_skip: 2,
            seed: 1234567890123,
            width: 1152,
            height: 896,
            base_model: "juggernautXL_v8Rundiffusion".into(),
            base_model_hash: Some("aeb7e9e689".into()),
            refiner_model: Some("sd_xl_refiner_1.0".into()),
            refiner_model_hash: Some("7440042bbd".into()),
            refiner_switch: 0.8,
            loras: vec![
                LoraEntry {
                    name: "sd_xl_offset_example-lora_1.0".into(),
                    hash: Some("4852686128".into()),
                    weight: 0.1,
                },
                LoraEntry {
                    name: "no_hash".into(),
                    hash: None,
                    weight: -0.75,
                },
            ],
            vae: Some("sdxl_vae".into()),
            ..ImageMetadata::default()
        }
    }

    #[test]
    fn writes_a1111_layout() {
        let text = to_a1111(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a cat on a sofa, (soft light:1.2)");
        assert_eq!(lines[2], "Negative prompt: blurry, \"bad\"");
        assert!(lines[3].starts_with(
            "Steps: 30, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 4.0, \
             Seed: 1234567890123, Size: 1152x896, Model hash: aeb7e9e689, \
             Model: juggernautXL_v8Rundiffusion, Clip skip: 2, VAE: sdxl_vae, "
        ));
        assert!(lines[3].contains("Lora hashes: \"sd_xl_offset_example-lora_1.0: 4852686128\""));
        assert!(lines[3].contains("ADM Guidance: \"(1.5, 0.8, 0.3)\""));
        assert!(lines[3].ends_with(&format!(
            "Version: {}",
            super::super::metadata::version_string()
        )));
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let back = parse_a1111(&to_a1111(&m)).unwrap();
        assert_eq!(back, m);

        let plain = ImageMetadata {
            prompt: "only a prompt".into(),
            clip_skip: 1,
            ..ImageMetadata::default()
        };
        assert_eq!(parse_a1111(&to_a1111(&plain)).unwrap(), plain);
    }

    #[test]
    fn names_become_stems_and_long_hashes_shorten() {
        let m = ImageMetadata {
            base_model: "models/juggernautXL_v8Rundiffusion.safetensors".into(),
            base_model_hash: Some(
                "aeb7e9e6897a1e58b10494bd989d001e3d4bc9b634633cd7b559838f612c2867".into(),
            ),
            sampler: "dpmpp_2m_sde".into(),
            ..ImageMetadata::default()
        };
        let back = parse_a1111(&to_a1111(&m)).unwrap();
        assert_eq!(back.base_model, "juggernautXL_v8Rundiffusion");
        assert_eq!(back.base_model_hash.as_deref(), Some("aeb7e9e689"));
        assert_eq!(back.sampler, "dpmpp_2m_sde_gpu");
    }

    #[test]
    fn reads_foreign_a1111_text() {
        let text = "a cat on a sofa, (soft light:1.2)\nNegative prompt: blurry\n\
                    Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, Size: 1024x768, \
                    Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0 [7440042bbd], \
                    Lora hashes: \"add_detail: 7c6bad76eb54\", Version: v1.10.1";
        let m = parse_a1111(text).unwrap();
        assert_eq!(m.prompt, "a cat on a sofa, (soft light:1.2)");
        assert_eq!(m.negative_prompt, "blurry");
        assert_eq!((m.steps, m.seed, m.width, m.height), (30, 123, 1024, 768));
        assert_eq!(m.sampler, "dpmpp_2m");
        assert_eq!(m.scheduler, "karras");
        assert_eq!(m.guidance_scale, 7.0);
        assert_eq!(m.clip_skip, 1);
        assert_eq!(m.refiner_model.as_deref(), Some("sd_xl_refiner_1.0"));
        assert_eq!(m.refiner_model_hash.as_deref(), Some("7440042bbd"));
        assert_eq!(m.loras.len(), 1);
        assert_eq!(m.loras[0].hash.as_deref(), Some("7c6bad76eb54"));
        assert_eq!(m.version, "v1.10.1");
    }

    #[test]
    fn rejects_text_without_parameter_line() {
        assert!(parse_a1111("just a prompt").is_none());
        assert!(parse_a1111("prompt\nSteps: 3, Seed: 4").is_none());
        assert!(parse_a1111("").is_none());
    }

    #[test]
    fn pair_scanner_handles_quotes_and_junk() {
        let pairs = parse_pairs(r#"A: 1, B: "x, y: \"z\"", !bad, C D: 3"#);
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "x, y: \"z\"".into()),
                ("C D".into(), "3".into())
            ]
        );
        assert!(parse_pairs(r#"A: "unterminated"#).len() == 1);
    }

    #[test]
    fn python_style_styles_and_floats() {
        assert_eq!(
            parse_styles("['Fooocus V2', 'Fooocus Sharp']"),
            vec!["Fooocus V2", "Fooocus Sharp"]
        );
        let odd = vec![
            "it's".to_string(),
            "a, b".into(),
            "back\\slash \"q\"".into(),
        ];
        assert_eq!(parse_styles(&python_list(&odd)), odd);
        assert_eq!(parse_styles(r#"["x", "y"]"#), vec!["x", "y"]);
        assert!(parse_styles("[]").is_empty());
        assert_eq!(fmt_float(7.0), "7.0");
        assert_eq!(fmt_float(0.3), "0.3");
        assert_eq!(fmt_float(-0.75), "-0.75");
    }
}
