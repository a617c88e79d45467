//! Why a run failed, with the underlying error's own message (which names the file or field).

use super::plan::RequestError;
use super::styles::StyleError;
use super::wildcards::WildcardError;
use crate::sampling::SamplingError;
use crate::store::StoreError;
use crate::weights::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Engine(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Style(#[from] StyleError),
    #[error(transparent)]
    Wildcard(#[from] WildcardError),
    #[error("saving failed: {0}")]
    Store(#[from] StoreError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("the {what} came out as NaN or infinity in {dtype}: {hint}")]
    NotFinite {
        what: &'static str,
        dtype: &'static str,
        hint: &'static str,
    },
    #[error(
        "a prompt line is {chunks} chunks of 75 tokens long; the limit is {limit} chunks (about \
         {} tokens): shorten it",
        limit * 75
    )]
    PromptTooLong { chunks: usize, limit: usize },
    #[error("{0}")]
    Other(String),
}
