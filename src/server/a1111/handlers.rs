//! The `/sdapi/v1` routes. `txt2img` and `img2img` queue a job and answer when it ends (a
//! client that leaves cancels nothing); `progress` shows the running job and counts the queued
//! ones; `interrupt` and `skip` act on the running job only. Listings read the model folders
//! on tokio's blocking threads.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde_json::Value;

use super::meaning::{a1111_sampler, generate_request, DEFAULT_DENOISE, SCHEDULES};
use super::models::{sd_models, select, selected, selected_model};
use super::wire::{
    ExtrasReply, ExtrasRequest, GenerationRequest, ImagesReply, Info, LoraItem, PngInfoReply,
    PngInfoRequest, ProgressQuery, ProgressReply, ProgressState, SamplerItem, SchedulerItem,
    Scripts, SdModel, StyleItem, UpscalerItem,
};
use super::A1111Error;
use crate::config::ModelKind;
use crate::jobs::JobState;
use crate::pipeline::plan::RequestError;
use crate::sampling::Sampler;
use crate::server::error::parse_json;
use crate::server::waiting::{blocking, plan_request, run_to_end, Finished, WaitError};
use crate::server::SharedState;
use crate::store::a1111::parse_pairs;
use crate::store::metadata::{model_stem, version_string};
use crate::store::{embedded_text_from_bytes, to_a1111};
use crate::weights::checkpoint::Architecture;

type Reply<T> = Result<Json<T>, A1111Error>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, A1111Error> {
    blocking(f).await.map_err(A1111Error::from)
}

/// Our request field → the A1111 field a client sent it in.
fn their_field(ours: &str) -> &str {
    match ours {
        "image_number" => "batch_size",
        "guidance_scale" => "cfg_scale",
        "input_image" => "init_images",
        "denoise" => "denoising_strength",
        "sampler" => "sampler_name",
        "base_model" => "sd_model_checkpoint",
        "refiner_model" => "refiner_checkpoint",
        "refiner_switch" => "refiner_switch_at",
        other => other,
    }
}

/// Our request field → the `extra-single-image` field a client sent it in.
fn extras_field(ours: &str) -> &str {
    match ours {
        "input_image" => "image",
        "resize_to" => "upscaling_resize",
        other => other,
    }
}

/// An error of a request built from a client's, naming the client's field (`theirs` maps ours).
fn refused(e: WaitError, theirs: fn(&str) -> &str) -> A1111Error {
    match e {
        WaitError::Request(RequestError { field, message }) => {
            A1111Error::bad_request(format!("`{}`: {message}", theirs(field)))
        }
        other => other.into(),
    }
}

/// `POST txt2img`.
pub async fn txt2img(State(state): State<SharedState>, body: Bytes) -> Reply<ImagesReply> {
    generate(state, body, false).await
}

/// `POST img2img`: `init_images[0]` re-sampled at `denoising_strength` (0.75 when absent), at
/// `width`×`height`.
pub async fn img2img(State(state): State<SharedState>, body: Bytes) -> Reply<ImagesReply> {
    generate(state, body, true).await
}

async fn generate(state: SharedState, body: Bytes, img2img: bool) -> Reply<ImagesReply> {
    let parameters: Value = parse_json(&body)?;
    let request: GenerationRequest = parse_json(&body)?;
    if img2img && request.init_images.as_ref().is_none_or(Vec::is_empty) {
        return Err(A1111Error {
            status: StatusCode::NOT_FOUND,
            error: "HTTPException",
            detail: "Init image not found: send the input image in `init_images`".into(),
        });
    }
    if !img2img && request.init_images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(A1111Error::bad_request(
            "`init_images`: txt2img takes no input image; send it to img2img",
        ));
    }
    if request.mask.is_some() {
        return Err(A1111Error::bad_request(
            "`mask`: inpainting is not supported yet; send img2img without a mask",
        ));
    }
    let model = match request
        .override_settings
        .as_ref()
        .and_then(|o| o.get("sd_model_checkpoint"))
        .and_then(Value::as_str)
    {
        Some(alias) => overridden_model(&state, alias.to_owned()).await?,
        None => selected(&state),
    };
    let ours = generate_request(&request, Some(model), &state.styles);
    let plan = plan_request(&state, ours)
        .await
        .map_err(|e| refused(e, their_field))?;
    let finished = run_to_end(&state, plan, None)
        .await
        .map_err(|e| refused(e, their_field))?;
    let send = request.send_images.unwrap_or(true);
    let denoise = img2img.then(|| request.denoising_strength.unwrap_or(DEFAULT_DENOISE));
    let info = info(&finished, denoise);
    Ok(Json(ImagesReply {
        images: if send {
            finished.images.iter().map(|i| b64(&i.bytes)).collect()
        } else {
            Vec::new()
        },
        parameters: without_images(parameters),
        info: serde_json::to_string(&info).unwrap_or_default(),
    }))
}

/// The request as A1111 echoes it, input images left out (its `include_init_images` default).
/// The checkpoint `override_settings.sd_model_checkpoint` names; an unknown one is dropped (the
/// selected checkpoint runs), as A1111 drops it.
async fn overridden_model(state: &SharedState, alias: String) -> Result<String, A1111Error> {
    let s = state.clone();
    let models = off_runtime(move || sd_models(&s)).await?;
    Ok(match super::models::find(&models, &alias) {
        Some(m) => super::meaning::strip_title(&m.title).to_owned(),
        None => {
            tracing::warn!(
                "override_settings.sd_model_checkpoint {alias:?}: no such checkpoint, ignored"
            );
            selected(state)
        }
    })
}

fn without_images(mut parameters: Value) -> Value {
    if let Some(object) = parameters.as_object_mut() {
        for key in ["init_images", "mask"] {
            if object.contains_key(key) {
                object.insert(key.into(), Value::Null);
            }
        }
    }
    parameters
}

/// What A1111's `Processed.js()` says, from the job's plan and the saved images' metadata.
fn info(f: &Finished, denoise: Option<f64>) -> Info {
    let plan = &f.plan;
    let seeds: Vec<u64> = if f.images.is_empty() {
        plan.seeds.clone()
    } else {
        f.images.iter().map(|i| i.seed).collect()
    };
    let n = seeds.len();
    let hash = f
        .images
        .iter()
        .find_map(|i| i.metadata.as_ref()?.base_model_hash.clone());
    Info {
        prompt: plan.prompt.clone(),
        all_prompts: vec![plan.prompt.clone(); n],
        negative_prompt: plan.negative_prompt.clone(),
        all_negative_prompts: vec![plan.negative_prompt.clone(); n],
        seed: seeds.first().copied().unwrap_or(0),
        all_seeds: seeds.clone(),
        subseed: 0,
        all_subseeds: vec![0; n],
        subseed_strength: 0.0,
        width: plan.width,
        height: plan.height,
        sampler_name: a1111_sampler(plan.sampler.name()),
        cfg_scale: plan.guidance.cfg,
        steps: plan.steps,
        batch_size: n,
        restore_faces: false,
        face_restoration_model: None,
        sd_model_name: model_stem(&plan.base_model.name).to_string(),
        sd_model_hash: hash,
        sd_vae_name: None,
        sd_vae_hash: None,
        seed_resize_from_w: -1,
        seed_resize_from_h: -1,
        denoising_strength: denoise,
        extra_generation_params: BTreeMap::new(),
        index_of_first_image: 0,
        infotexts: f
            .images
            .iter()
            .map(|i| i.metadata.as_ref().map(to_a1111).unwrap_or_default())
            .collect(),
        styles: plan.styles.clone(),
        job_timestamp: chrono::Local::now().format("%Y%m%d%H%M%S").to_string(),
        clip_skip: plan.clip_skip,
        is_using_inpainting_conditioning: false,
        version: version_string(),
    }
}

/// `GET progress[?skip_current_image=true]`: idle reads exactly 0 with `job_count` 0.
pub async fn progress(
    State(state): State<SharedState>,
    Query(query): Query<ProgressQuery>,
) -> Json<ProgressReply> {
    let queue = state.worker.queue();
    let running = queue.iter().find(|s| s.state == JobState::Running);
    let mut reply = ProgressReply {
        progress: 0.0,
        eta_relative: 0.0,
        state: ProgressState {
            skipped: false,
            interrupted: false,
            stopping_generation: false,
            job: String::new(),
            job_count: queue.len(),
            job_timestamp: "0".into(),
            job_no: 0,
            sampling_step: 0,
            sampling_steps: 0,
        },
        current_image: None,
        textinfo: None,
    };
    let Some(job) = running else {
        return Json(reply);
    };
    let p = &job.progress;
    let done = (f64::from(p.percent) / 100.0).clamp(0.0, 1.0);
    reply.progress = (0.01 + done).min(1.0);
    if let Some(started) = job.started {
        let elapsed = Instant::now().duration_since(started).as_secs_f64();
        reply.eta_relative = (elapsed / reply.progress - elapsed).max(0.0);
    }
    reply.state.job = format!("job {}", job.job_id);
    reply.state.job_no = p.image.saturating_sub(1);
    reply.state.sampling_step = p.step;
    reply.state.sampling_steps = p.steps;
    reply.textinfo = (!p.text.is_empty()).then(|| p.text.clone());
    if !query.skips_image() {
        let frame = state.worker.previews().borrow().clone();
        reply.current_image = frame
            .filter(|f| f.job_id == job.job_id)
            .map(|f| b64(&f.jpeg));
    }
    Json(reply)
}

fn running_job(state: &SharedState) -> Option<u64> {
    state
        .worker
        .queue()
        .into_iter()
        .find(|s| s.state == JobState::Running)
        .map(|s| s.job_id)
}

/// `POST interrupt`: stops the running job (its finished images are kept and returned to the
/// client waiting for it); queued jobs go on. `{}`.
pub async fn interrupt(State(state): State<SharedState>) -> Json<Value> {
    if let Some(id) = running_job(&state) {
        state.worker.stop(id);
    }
    Json(Value::Object(Default::default()))
}

/// `POST skip`: abandons the running job's current image. `null`.
pub async fn skip(State(state): State<SharedState>) -> Json<Value> {
    if let Some(id) = running_job(&state) {
        state.worker.skip(id);
    }
    Json(Value::Null)
}

/// `GET options`: the settings clients read; `sd_model_checkpoint` is one of `sd-models`'
/// titles.
pub async fn get_options(State(state): State<SharedState>) -> Reply<BTreeMap<String, Value>> {
    let s = state.clone();
    let current = off_runtime(move || selected_model(&s)).await?;
    let current = current.as_ref();
    let mut options = BTreeMap::new();
    let mut set = |k: &str, v: Value| {
        options.insert(k.to_string(), v);
    };
    set(
        "sd_model_checkpoint",
        current.map_or(Value::Null, |m| m.title.clone().into()),
    );
    set(
        "sd_checkpoint_hash",
        current.map_or(Value::Null, |m| m.sha256.clone().into()),
    );
    set("sd_vae", "Automatic".into());
    set("CLIP_stop_at_last_layers", state.preset.clip_skip.into());
    set("samples_format", "png".into());
    set("live_previews_enable", true.into());
    set("show_progress_every_n_steps", 1.into());
    Ok(Json(options))
}

/// `POST options`: `sd_model_checkpoint` (a title or any alias A1111 takes) selects the base
/// model requests run on when they name none; other keys are accepted and ignored. `null`.
pub async fn set_options(State(state): State<SharedState>, body: Bytes) -> Reply<Value> {
    let options: BTreeMap<String, Value> = parse_json(&body)?;
    let Some(wanted) = options.get("sd_model_checkpoint").filter(|v| !v.is_null()) else {
        return Ok(Json(Value::Null));
    };
    let Some(alias) = wanted.as_str().map(str::to_owned) else {
        return Err(A1111Error::bad_request(
            "`sd_model_checkpoint`: a title from sd-models, as a string",
        ));
    };
    let s = state.clone();
    let outcome = off_runtime(move || {
        let models = sd_models(&s);
        let found = super::models::find(&models, &alias)?;
        let base = s
            .architectures
            .architecture(std::path::Path::new(&found.filename))
            == Architecture::SdxlBase;
        Some(
            base.then(|| select(&s, &models, &alias))
                .flatten()
                .ok_or(alias),
        )
    })
    .await?;
    match outcome {
        Some(Ok(_)) => Ok(Json(Value::Null)),
        Some(Err(alias)) => Err(A1111Error::bad_request(format!(
            "`sd_model_checkpoint`: {alias:?} is a refiner; choose an SDXL base model"
        ))),
        None => Err(A1111Error {
            status: StatusCode::BAD_REQUEST,
            error: "RuntimeError",
            detail: format!(
                "`sd_model_checkpoint`: model {wanted} not found: choose a title from GET \
                 /sdapi/v1/sd-models"
            ),
        }),
    }
}

/// `GET sd-models`.
pub async fn sd_models_list(State(state): State<SharedState>) -> Reply<Vec<SdModel>> {
    Ok(Json(off_runtime(move || sd_models(&state)).await?))
}

/// `GET samplers`: the samplers we run, under A1111's names (our names as aliases).
pub async fn samplers() -> Json<Vec<SamplerItem>> {
    let mut items: Vec<SamplerItem> = Vec::new();
    for ours in Sampler::names() {
        let name = a1111_sampler(ours);
        match items.iter_mut().find(|i| i.name == name) {
            Some(item) => item.aliases.push(ours.to_string()),
            None => items.push(SamplerItem {
                name,
                aliases: vec![ours.to_string()],
                options: BTreeMap::new(),
            }),
        }
    }
    Json(items)
}

/// `GET schedulers`: A1111's names and labels of ours (`automatic`: the preset's).
pub async fn schedulers() -> Json<Vec<SchedulerItem>> {
    Json(
        SCHEDULES
            .iter()
            .map(|&(name, label, ours)| SchedulerItem {
                name,
                label,
                aliases: ours.filter(|o| *o != name).map(|o| vec![o]),
                default_rho: -1.0,
                need_inner_model: false,
            })
            .collect(),
    )
}

/// The upscalers `extra-single-image` takes: none (Lanczos alone) and Fooocus' 4× ESRGAN.
const NO_UPSCALER: [&str; 2] = ["None", "Lanczos"];
const ESRGAN: &str = "ESRGAN_4x";

/// `GET upscalers`.
pub async fn upscalers(State(state): State<SharedState>) -> Json<Vec<UpscalerItem>> {
    let plain = |name| UpscalerItem {
        name,
        model_name: None,
        model_path: None,
        model_url: None,
        scale: 4.0,
    };
    let entry = crate::hub::upscaler_entry();
    Json(vec![
        plain(NO_UPSCALER[0]),
        plain(NO_UPSCALER[1]),
        UpscalerItem {
            name: ESRGAN,
            model_name: Some("fooocus_upscaler"),
            model_path: Some(
                state
                    .config
                    .paths
                    .upscale_models
                    .join(crate::hub::UPSCALER_FILE)
                    .display()
                    .to_string(),
            ),
            model_url: Some(entry.url(&state.hub_endpoint)),
            scale: 4.0,
        },
    ])
}

/// `POST extra-single-image`: the image through the 4× ESRGAN (`upscaler_1` `ESRGAN_4x`, the
/// default) or Lanczos alone (`None`, `Lanczos`), resized by `upscaling_resize` (default 2) or to
/// `upscaling_resize_w` × `upscaling_resize_h` (`resize_mode` 1). A job like the others, saved.
pub async fn extra_single_image(
    State(state): State<SharedState>,
    body: Bytes,
) -> Reply<ExtrasReply> {
    let r: ExtrasRequest = parse_json(&body)?;
    let Some(image) = r.image.clone() else {
        return Err(A1111Error::bad_request("`image`: send the image as base64"));
    };
    // Decoded here for its size (the plan decodes it again, with the same bounds).
    let upscaler = match r.upscaler_1.as_deref().map(str::trim) {
        None | Some("") | Some(ESRGAN) => true,
        Some(name) if NO_UPSCALER.iter().any(|n| n.eq_ignore_ascii_case(name)) => false,
        Some(name) => {
            return Err(A1111Error::bad_request(format!(
                "`upscaler_1`: no upscaler {name:?}: choose None, Lanczos or {ESRGAN}"
            )))
        }
    };
    let s = state.clone();
    let input = off_runtime(move || {
        crate::pipeline::image::read_input(
            &image,
            &crate::store::OutputStore::new(&s.config.paths.outputs),
        )
    })
    .await?
    .map_err(|e| A1111Error::bad_request(format!("`image`: {e}")))?;
    let (w, h) = input.pixels.dimensions();
    let size = match r.resize_mode.unwrap_or(0) {
        1 => [
            r.upscaling_resize_w.unwrap_or(w),
            r.upscaling_resize_h.unwrap_or(h),
        ],
        _ => {
            let f = r.upscaling_resize.unwrap_or(2.0);
            if !(f.is_finite() && (1.0..=8.0).contains(&f)) {
                return Err(A1111Error::bad_request(format!(
                    "`upscaling_resize`: {f}: use 1 to 8"
                )));
            }
            [
                (f64::from(w) * f).round() as u32,
                (f64::from(h) * f).round() as u32,
            ]
        }
    };
    let request = crate::pipeline::request::GenerateRequest {
        input_image: r.image,
        resize_to: Some(size),
        resize_upscaler: Some(upscaler),
        ..Default::default()
    };
    let plan = plan_request(&state, request)
        .await
        .map_err(|e| refused(e, extras_field))?;
    let finished = run_to_end(&state, plan, None)
        .await
        .map_err(|e| refused(e, extras_field))?;
    let image = finished
        .images
        .first()
        .map(|i| b64(&i.bytes))
        .ok_or_else(|| A1111Error::from(WaitError::Failed("the job saved no image".into())))?;
    Ok(Json(ExtrasReply {
        image,
        html_info: String::new(),
    }))
}

/// `GET latent-upscale-modes`, `GET sd-vae`: none (no hires fix; each checkpoint's own VAE).
pub async fn empty_list() -> Json<Vec<Value>> {
    Json(Vec::new())
}

/// `GET scripts`: none (so clients send no `alwayson_scripts`).
pub async fn scripts() -> Json<Scripts> {
    Json(Scripts {
        txt2img: Vec::new(),
        img2img: Vec::new(),
    })
}

/// `GET loras`: the LoRA files.
pub async fn loras(State(state): State<SharedState>) -> Reply<Vec<LoraItem>> {
    let list = off_runtime(move || state.config.list_models(ModelKind::Lora)).await?;
    Ok(Json(
        list.into_iter()
            .map(|m| {
                let stem = model_stem(&m.name).to_string();
                LoraItem {
                    name: stem.clone(),
                    alias: stem,
                    path: m.path.display().to_string(),
                    metadata: BTreeMap::new(),
                }
            })
            .collect(),
    ))
}

/// `GET prompt-styles`: our styles (names clients may send in `styles`).
pub async fn prompt_styles(State(state): State<SharedState>) -> Json<Vec<StyleItem>> {
    Json(
        state
            .styles
            .iter()
            .map(|s| StyleItem {
                name: s.name.clone(),
                prompt: s.prompt.clone(),
                negative_prompt: s.negative_prompt.clone(),
            })
            .collect(),
    )
}

/// `POST refresh-checkpoints` (the folders are read at every listing). `null`.
pub async fn refresh() -> Json<Value> {
    Json(Value::Null)
}

/// `POST png-info`: the A1111 text an image carries (ours or A1111's), and its pairs.
pub async fn png_info(body: Bytes) -> Reply<PngInfoReply> {
    let request: PngInfoRequest = parse_json(&body)?;
    let Some(image) = request.image else {
        return Err(A1111Error::bad_request("`image`: send the image as base64"));
    };
    let encoded = match image.split_once(";base64,") {
        Some((_, data)) => data,
        None => image.as_str(),
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| A1111Error::bad_request(format!("`image`: not base64: {e}")))?;
    let text = embedded_text_from_bytes(&bytes)
        .map_err(|e| A1111Error::bad_request(format!("`image`: {e}")))?;
    let info = text
        .parameters
        .clone()
        .or_else(|| text.metadata().map(|m| to_a1111(&m)))
        .unwrap_or_default();
    Ok(Json(PngInfoReply {
        parameters: parameters_of(&info),
        info,
        items: BTreeMap::new(),
    }))
}

/// A1111's `parse_generation_parameters` keys: `Prompt`, `Negative prompt`, every pair of the
/// last line, `Size-1`/`Size-2` for `WxH`.
fn parameters_of(text: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if text.is_empty() {
        return out;
    }
    let (head, last) = text.rsplit_once('\n').unwrap_or(("", text));
    let (prompt, negative) = match head.split_once("\nNegative prompt: ") {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => match head.strip_prefix("Negative prompt: ") {
            Some(n) => (String::new(), n.to_string()),
            None => (head.to_string(), String::new()),
        },
    };
    out.insert("Prompt".into(), prompt.into());
    out.insert("Negative prompt".into(), negative.into());
    for (key, value) in parse_pairs(last) {
        if key == "Size" {
            if let Some((w, h)) = value.split_once('x') {
                out.insert("Size-1".into(), w.into());
                out.insert("Size-2".into(), h.into());
            }
        }
        out.insert(key, value.into());
    }
    out
}
