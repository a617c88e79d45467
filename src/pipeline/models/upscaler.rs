//! The upscaler network, loaded on first use and kept; its file fetched from the hub when it is
//! not on disk yet (with progress), or refused with where to put it when downloads are off.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::hub::{upscaler_entry, DownloadProgress, HubClient};
use crate::nets::esrgan::{load_upscaler, Rrdb};
use crate::nn::Kernels;
use crate::pipeline::PipelineError;

/// The loaded upscaler and its file.
#[derive(Default)]
pub struct UpscalerSlot {
    loaded: Option<(PathBuf, Rrdb)>,
}

impl UpscalerSlot {
    /// The upscaler at `path` on `device`, downloaded by `hub` first if missing.
    pub fn get(
        &mut self,
        path: &Path,
        device: &Device,
        hub: Option<&HubClient>,
        on_stage: &mut dyn FnMut(String),
    ) -> Result<&Rrdb, PipelineError> {
        if self.loaded.as_ref().is_none_or(|(p, _)| p != path) {
            self.loaded = None;
            if !path.is_file() {
                fetch(path, hub, on_stage)?;
            }
            on_stage("Loading the upscaler".into());
            let weights = load_upscaler(path)?;
            let network = Rrdb::new(weights, device, Kernels::default())?;
            self.loaded = Some((path.to_path_buf(), network));
        }
        match &self.loaded {
            Some((_, network)) => Ok(network),
            None => Err(PipelineError::Other("the upscaler did not load".into())),
        }
    }
}

fn fetch(
    path: &Path,
    hub: Option<&HubClient>,
    on_stage: &mut dyn FnMut(String),
) -> Result<(), PipelineError> {
    let entry = upscaler_entry();
    let Some(hub) = hub else {
        return Err(PipelineError::Other(format!(
            "the upscaler {} is not at {} and downloads are off: download it from \
             {} and put it there",
            entry.name,
            path.display(),
            entry.url(crate::hub::client::DEFAULT_ENDPOINT)
        )));
    };
    on_stage(format!("Downloading {}", entry.name));
    let mut last = u64::MAX;
    let mut progress = |p: DownloadProgress| {
        let percent = p.downloaded.saturating_mul(100) / p.total.max(1);
        if percent != last {
            last = percent;
            on_stage(format!("Downloading {} ({percent}%)", entry.name));
        }
    };
    hub.download(&entry, path, &mut progress)
        .map_err(|e| PipelineError::Other(format!("the upscaler could not be fetched: {e}")))?;
    Ok(())
}
