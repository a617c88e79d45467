//! `POST /v1/images/generations` and `GET /v1/models`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine;

use super::wire::{GenerationsRequest, ImageData, ImagesResponse, Model, ModelList};
use super::OpenAiError;
use crate::pipeline::request::{aspect_label, GenerateRequest, ASPECT_RATIOS};
use crate::server::a1111::models::selected;
use crate::server::error::parse_json;
use crate::server::waiting::{blocking, plan_request, run_to_end, Retry};
use crate::server::SharedState;

/// Most images one request may ask for (OpenAI's own limit).
pub const MAX_N: u32 = 10;

/// The SDXL resolution nearest in aspect ratio to `WxH` (`auto` or nothing: `None`, the
/// preset's).
pub fn nearest_resolution(size: Option<&str>) -> Result<Option<(u32, u32)>, OpenAiError> {
    let Some(text) = size
        .map(str::trim)
        .filter(|s| !s.eq_ignore_ascii_case("auto"))
    else {
        return Ok(None);
    };
    let parsed = text
        .split_once(['x', 'X', '×', '*'])
        .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)))
        .filter(|&(w, h)| w > 0 && h > 0);
    let Some((w, h)) = parsed else {
        return Err(OpenAiError::invalid(
            "size",
            format!("size {text:?}: use WIDTHxHEIGHT, e.g. 1024x1024, or auto"),
        ));
    };
    let ratio = (f64::from(w) / f64::from(h)).ln();
    let distance = |&(a, b): &(u32, u32)| ((f64::from(a) / f64::from(b)).ln() - ratio).abs();
    Ok(ASPECT_RATIOS
        .iter()
        .min_by(|x, y| distance(x).total_cmp(&distance(y)))
        .copied())
}

/// `http(s)://host` as the client reached us.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|s| *s == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The request a generations body makes.
fn generate_request(
    r: &GenerationsRequest,
    state: &SharedState,
    models: &[String],
) -> Result<GenerateRequest, OpenAiError> {
    let prompt = r
        .prompt
        .clone()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| OpenAiError::invalid("prompt", "prompt is required"))?;
    let n = r.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(OpenAiError::invalid(
            "n",
            format!("n = {n}: ask for 1 to {MAX_N} images"),
        ));
    }
    match r.response_format.as_deref() {
        None | Some("b64_json" | "url") => {}
        Some(other) => {
            return Err(OpenAiError::invalid(
                "response_format",
                format!("response_format {other:?}: use b64_json or url"),
            ))
        }
    }
    let base_model = r
        .model
        .as_ref()
        .filter(|m| {
            models
                .iter()
                .any(|known| known == *m || known.strip_suffix(".safetensors") == Some(m))
        })
        .cloned()
        .unwrap_or_else(|| selected(state));
    let quality = r
        .quality
        .as_deref()
        .filter(|q| q.eq_ignore_ascii_case("hd") || q.eq_ignore_ascii_case("high"))
        .map(|_| "Quality".to_string());
    Ok(GenerateRequest {
        prompt,
        aspect_ratio: nearest_resolution(r.size.as_deref())?.map(aspect_label),
        image_number: Some(n),
        base_model: Some(base_model),
        performance: quality,
        output_format: r
            .output_format
            .as_deref()
            .map(|f| if f == "jpeg" { "jpg" } else { f }.to_string()),
        ..GenerateRequest::default()
    })
}

/// `POST /v1/images/generations`: the images as `b64_json` (default) or as `url`s of our saved
/// files.
pub async fn generations(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImagesResponse>, OpenAiError> {
    let request: GenerationsRequest = parse_json(&body)?;
    let s = state.clone();
    let models = blocking(move || checkpoint_names(&s)).await?;
    let ours = generate_request(&request, &state, &models)?;
    let plan = plan_request(&state, ours).await?;
    let again = headers
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 0);
    let finished = run_to_end(&state, plan, Some(Retry::new(&body, again))).await?;
    if finished.images.is_empty() && finished.stopped {
        return Err(OpenAiError {
            status: axum::http::StatusCode::CONFLICT,
            message: "the job was stopped before any image was finished".into(),
            param: None,
        });
    }
    let as_url = request.response_format.as_deref() == Some("url");
    let origin = origin(&headers);
    let data = finished
        .images
        .iter()
        .map(|image| ImageData {
            b64_json: (!as_url)
                .then(|| base64::engine::general_purpose::STANDARD.encode(&image.bytes)),
            url: as_url.then(|| format!("{origin}/outputs/{}", image.path)),
            revised_prompt: image.metadata.as_ref().map(|m| {
                if m.expanded_prompt.is_empty() {
                    m.prompt.clone()
                } else {
                    m.expanded_prompt.clone()
                }
            }),
        })
        .collect();
    Ok(Json(ImagesResponse {
        created: chrono::Utc::now().timestamp(),
        data,
        size: format!("{}x{}", finished.plan.width, finished.plan.height),
        output_format: match finished.plan.output_format.extension() {
            "jpg" => "jpeg".into(),
            other => other.into(),
        },
    }))
}

/// The SDXL checkpoints by name.
fn checkpoint_names(state: &SharedState) -> Vec<String> {
    state
        .sdxl_checkpoints()
        .into_iter()
        .map(|m| m.name)
        .collect()
}

/// `GET /v1/models`: the SDXL checkpoints.
pub async fn models(State(state): State<SharedState>) -> Result<Json<ModelList>, OpenAiError> {
    let names = blocking(move || checkpoint_names(&state)).await?;
    Ok(Json(ModelList {
        object: "list",
        data: names
            .into_iter()
            .map(|id| Model {
                id,
                object: "model",
                created: 0,
                owned_by: "fooocus-rs",
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_the_nearest_sdxl_resolution() {
        let near = |s| nearest_resolution(Some(s)).ok().flatten();
        assert_eq!(near("1024x1024"), Some((1024, 1024)));
        assert_eq!(near("512x512"), Some((1024, 1024)));
        assert_eq!(near("1792x1024"), Some((1344, 768)));
        assert_eq!(near("1024x1536"), Some((832, 1216)));
        assert_eq!(nearest_resolution(Some("auto")).ok(), Some(None));
        assert!(nearest_resolution(Some("big")).is_err());
    }
}
