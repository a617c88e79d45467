//! `--device`, `--precision`, `--vram` and `--cpu-bf16`, shared by `serve`, `generate` and
//! `bench`: parsed here, turned into a `runtime::Placement`.

use crate::kernels::fastmath::has_avx512_bf16;
use crate::runtime::{
    describe, open_device, DeviceChoice, DeviceError, Placement, Precision, Vram,
};

/// The `--device` and `--precision` flags.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ComputeArgs {
    /// Where the networks run: auto (CUDA, else Metal, else the CPU), cpu, cuda[:N], metal[:N].
    #[arg(long, default_value_t = DeviceChoice::Auto, value_name = "DEVICE")]
    pub device: DeviceChoice,
    /// The dtype of the text encoders and UNets: auto (f32 on the CPU, f16 on a GPU), f32, f16,
    /// bf16. The VAE always runs in f32.
    #[arg(long, default_value_t = Precision::Auto, value_name = "DTYPE")]
    pub precision: Precision,
    /// How much stays on the device: auto (high on a CUDA GPU with 16 GiB or more, low on the CPU
    /// with less than 32 GiB of RAM, else normal), high (everything), normal (one UNet at a time),
    /// low (one UNet at a time, the text encoders on the CPU; on the CPU the weights kept in f16
    /// and widened layer by layer).
    #[arg(long, default_value_t = Vram::Auto, value_name = "MODE")]
    pub vram: Vram,
    /// On the CPU, multiply the UNets' linear layers (most of a step's work) in bf16, summing
    /// in f32: about twice as fast where the CPU has AVX-512 BF16 (slower without), images
    /// slightly different. Everything else stays f32.
    #[arg(long)]
    pub cpu_bf16: bool,
}

impl ComputeArgs {
    /// The placement the flags describe, on `device` instead of `--device`.
    pub fn placement_on(&self, device: DeviceChoice) -> Result<Placement, DeviceError> {
        ComputeArgs { device, ..*self }.placement()
    }

    /// Opens the device and returns the placement the flags describe.
    pub fn placement(&self) -> Result<Placement, DeviceError> {
        let device = open_device(self.device)?;
        let placement = Placement {
            vram: self.vram.resolve(&device),
            device,
            precision: self.precision,
            cpu_bf16: self.cpu_bf16,
        };
        if self.cpu_bf16 && !placement.bf16_products() {
            tracing::warn!(
                "--cpu-bf16 applies only to networks computing in f32 on the CPU; ignored on {} \
                 with --precision {}",
                describe(&placement.device),
                self.precision
            );
        } else if placement.bf16_products() && !has_avx512_bf16() {
            tracing::warn!(
                "this CPU lacks AVX-512 BF16: --cpu-bf16 falls back to plain code, slower than \
                 f32 here; leave it off"
            );
        }
        Ok(placement)
    }
}
