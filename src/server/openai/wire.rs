//! OpenAI's images bodies as serde structs. Requests ignore the fields that mean nothing here
//! (`user`, `background`, `moderation`, …); replies have the SDK's `ImagesResponse` shape.

use serde::{Deserialize, Serialize};

/// `POST /v1/images/generations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GenerationsRequest {
    pub prompt: Option<String>,
    /// Any string: one of our checkpoints by name, else the selected one.
    pub model: Option<String>,
    pub n: Option<u32>,
    /// `WxH` (mapped to the nearest SDXL resolution) or `auto` (the preset's).
    pub size: Option<String>,
    /// `hd`/`high`: Fooocus' Quality performance; others: the preset's.
    pub quality: Option<String>,
    /// `b64_json` (default) or `url`.
    pub response_format: Option<String>,
    pub style: Option<String>,
    pub output_format: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ImagesResponse {
    pub created: i64,
    pub data: Vec<ImageData>,
    /// The resolution the images have, `WxH`.
    pub size: String,
    pub output_format: String,
}

#[derive(Debug, Serialize)]
pub struct ImageData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The positive prompt the image was made from (styles applied).
    pub revised_prompt: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Serialize)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
}
