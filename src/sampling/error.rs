//! The error type of the sampling module.

/// What can go wrong while building a schedule, choosing a sampler or running one.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A tensor operation, the denoiser or the noise source failed.
    #[error("tensor operation failed during sampling: {0}")]
    Candle(#[from] candle_core::Error),
    /// A sampler name that this build does not implement.
    #[error("unknown sampler {name:?}; choose one of: {known}")]
    UnknownSampler { name: String, known: String },
    /// A scheduler name that this build does not implement.
    #[error("unknown scheduler {name:?}; choose one of: {known}")]
    UnknownScheduler { name: String, known: String },
    /// A discrete sigma table that cannot be used (wrong lengths, non-positive values, ...).
    #[error("invalid discrete sigma table: {0}")]
    InvalidTable(String),
    /// A schedule request or a sigma list that cannot be sampled.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),
}

/// Result alias for the sampling module.
pub type Result<T> = std::result::Result<T, SamplingError>;
