//! Where the networks run, in which precision and how much stays resident:
//! `--device auto|cpu|cuda[:N]|metal[:N]`, `--precision auto|f32|f16|bf16` and
//! `--vram auto|high|normal|low`, shared by the server, `generate` and `bench`. `auto` picks the first
//! CUDA GPU, else Metal, else the CPU; f32 on the CPU, f16 on a GPU. The VAE always decodes in
//! f32 (the SDXL VAE overflows in f16: the classic black image).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

/// The `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, ordinal) = match s.split_once(':') {
            Some((kind, n)) => {
                let n = n
                    .parse::<usize>()
                    .map_err(|_| format!("`{s}`: the GPU number after `:` must be 0, 1, …"))?;
                (kind, Some(n))
            }
            None => (s, None),
        };
        match (kind.to_ascii_lowercase().as_str(), ordinal) {
            ("auto", None) => Ok(DeviceChoice::Auto),
            ("cpu", None) => Ok(DeviceChoice::Cpu),
            ("cuda", n) => Ok(DeviceChoice::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceChoice::Metal(n.unwrap_or(0))),
            _ => Err(format!(
                "unknown device `{s}`: choose auto, cpu, cuda, cuda:N, metal or metal:N"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceChoice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

/// The `--precision` value: the dtype text encoders and UNets compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 on the CPU (no fast half-precision CPU kernels), f16 on a GPU.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" | "full" => Ok(Precision::F32),
            "f16" | "fp16" | "half" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!(
                "unknown precision `{s}`: choose auto, f32, f16 or bf16"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// The dtype networks compute in on `device`.
    pub fn dtype_on(self, device: &Device) -> DType {
        match self {
            Precision::Auto if device.is_cpu() => DType::F32,
            Precision::Auto => DType::F16,
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// The `--vram` value: how much of the models stays on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vram {
    /// `High` on a CUDA GPU with at least 16 GiB; on the CPU `Low` below 32 GiB of RAM; else
    /// `Normal` (see [`Vram::resolve`]).
    #[default]
    Auto,
    /// Everything resident: text encoders, both UNets, the VAE (SDXL in f16: about 12 GB).
    High,
    /// One UNet at a time: the refiner's is built when sampling reaches the switch, after the
    /// base's is dropped, and the base's again for the next image (about 7 GB in f16; on the
    /// CPU it halves the memory of a base + refiner run).
    Normal,
    /// As `Normal`, with the text encoders on the CPU in f32 (about 5.5 GB on the GPU). On the
    /// CPU, the text encoders' and UNet's weights stored in f16/bf16 stay so and are widened to
    /// f32 layer by layer: the same images from half the memory, a few per cent slower.
    Low,
}

impl FromStr for Vram {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Vram::Auto),
            "high" => Ok(Vram::High),
            "normal" => Ok(Vram::Normal),
            "low" => Ok(Vram::Low),
            _ => Err(format!(
                "unknown VRAM mode `{s}`: choose auto, high, normal or low"
            )),
        }
    }
}

impl fmt::Display for Vram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vram::Auto => "auto",
            Vram::High => "high",
            Vram::Normal => "normal",
            Vram::Low => "low",
        })
    }
}

/// GPUs with at least this much memory keep everything resident under `--vram auto`.
const HIGH_VRAM_BYTES: usize = 16 << 30;

/// Below this much RAM, `--vram auto` on the CPU keeps the UNet's weights in half precision.
const LEAN_RAM_BYTES: usize = 32 << 30;

impl Vram {
    /// `Auto` made concrete for `device`: `High` on a CUDA GPU with at least 16 GiB (SDXL's
    /// weights in f16 take 11.6 GB); on the CPU `Low` when the machine has less than 32 GiB of
    /// RAM (an f32 base UNet alone takes 10.3 GB); else `Normal` (Metal's shared memory,
    /// smaller GPUs, big CPU machines).
    pub fn resolve(self, device: &Device) -> Vram {
        match self {
            Vram::Auto => {
                if device.is_cpu() {
                    cpu_auto(system_memory())
                } else {
                    match device_memory(device) {
                        Some(bytes) if bytes >= HIGH_VRAM_BYTES => Vram::High,
                        _ => Vram::Normal,
                    }
                }
            }
            chosen => chosen,
        }
    }
}

/// `--vram auto` on the CPU for a machine with `ram` bytes (`None`: unknown).
fn cpu_auto(ram: Option<usize>) -> Vram {
    match ram {
        Some(bytes) if bytes < LEAN_RAM_BYTES => Vram::Low,
        _ => Vram::Normal,
    }
}

/// The memory this process may use: `/proc/meminfo`'s total, or the cgroup's limit when lower
/// (containers). `None` where neither can be read.
fn system_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let total = line.split_whitespace().nth(1)?.parse::<usize>().ok()? * 1024;
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    Some(limit.map_or(total, |l| l.min(total)))
}

/// The total memory of a CUDA device (`None` elsewhere, or when the driver does not say).
fn device_memory(device: &Device) -> Option<usize> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        return cuda.cuda_stream().context().total_mem().ok();
    }
    let _ = device;
    None
}

/// Where and how the networks run.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    pub precision: Precision,
    pub vram: Vram,
    /// `--cpu-bf16`: the UNets' linear layers multiply in bf16 on the CPU.
    pub cpu_bf16: bool,
}

impl Placement {
    /// The CPU in f32 with the default residency.
    pub fn cpu() -> Placement {
        Placement {
            device: Device::Cpu,
            precision: Precision::Auto,
            vram: Vram::Normal,
            cpu_bf16: false,
        }
    }

    /// Where the text encoders run: the CPU with `--vram low`, else the device.
    pub fn text_device(&self) -> Device {
        match self.vram {
            Vram::Low => Device::Cpu,
            _ => self.device.clone(),
        }
    }

    /// The text encoders' precision: f32 when `--vram low` moved them to the CPU.
    pub fn text_precision(&self) -> Precision {
        match self.vram {
            Vram::Low if !self.device.is_cpu() => Precision::F32,
            _ => self.precision,
        }
    }

    /// Whether base and refiner UNets both stay resident.
    pub fn keeps_both_unets(&self) -> bool {
        self.vram == Vram::High
    }

    /// Whether the text encoders and UNets keep their weights in the checkpoint's half precision
    /// and widen them layer by layer (`--vram low` on the CPU).
    pub fn lean_weights(&self) -> bool {
        self.device.is_cpu() && self.vram == Vram::Low
    }

    /// Whether the UNets' linear layers multiply in bf16 (`--cpu-bf16`, on the CPU in f32).
    pub fn bf16_products(&self) -> bool {
        self.cpu_bf16 && self.device.is_cpu() && self.precision.dtype_on(&self.device) == DType::F32
    }
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this fooocus was built without {backend}: rebuild with `cargo build --release \
         --features {feature}`{hint}, or pass --device cpu"
    )]
    NotBuiltWith {
        backend: &'static str,
        feature: &'static str,
        hint: &'static str,
    },
    #[error("cannot open {device}: {reason} (is the GPU there and its driver installed? --device cpu runs without one)")]
    Open {
        device: DeviceChoice,
        reason: String,
    },
}

/// Opens the device `choice` names; `Auto` falls back to the CPU, saying why at INFO.
pub fn open_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(DeviceError::NotBuiltWith {
                    backend: "CUDA",
                    feature: "cuda",
                    hint: " (scripts/build-cuda.sh sets up the toolkit)",
                });
            }
            Device::new_cuda(n).map_err(|e| DeviceError::Open {
                device: choice,
                reason: e.to_string(),
            })
        }
        DeviceChoice::Metal(n) => {
            if !candle_core::utils::metal_is_available() {
                return Err(DeviceError::NotBuiltWith {
                    backend: "Metal",
                    feature: "metal",
                    hint: " on a Mac",
                });
            }
            Device::new_metal(n).map_err(|e| DeviceError::Open {
                device: choice,
                reason: e.to_string(),
            })
        }
        DeviceChoice::Auto => {
            for gpu in [DeviceChoice::Cuda(0), DeviceChoice::Metal(0)] {
                match open_device(gpu) {
                    Ok(device) => return Ok(device),
                    Err(DeviceError::NotBuiltWith { .. }) => {}
                    Err(e) => tracing::info!("{e}; trying the next device"),
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// A short name of `device` for messages and `/api/health`.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("CUDA", DeviceChoice::Cuda(0)),
            ("cuda:1", DeviceChoice::Cuda(1)),
            ("metal", DeviceChoice::Metal(0)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), choice);
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["gpu", "cuda:x", "cpu:0", "cuda:"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert!("f8".parse::<Precision>().unwrap_err().contains("f32, f16"));
    }

    #[test]
    fn vram_modes_place_the_text_encoders() {
        assert_eq!("LOW".parse::<Vram>().unwrap(), Vram::Low);
        assert_eq!(Vram::Auto.resolve(&Device::Cpu), cpu_auto(system_memory()));
        assert_eq!(cpu_auto(Some(16 << 30)), Vram::Low);
        assert_eq!(cpu_auto(Some(64 << 30)), Vram::Normal);
        assert_eq!(cpu_auto(None), Vram::Normal);
        assert_eq!(Vram::High.resolve(&Device::Cpu), Vram::High);
        assert!("tiny".parse::<Vram>().is_err());
        let mut p = Placement::cpu();
        assert!(!p.keeps_both_unets());
        p.vram = Vram::High;
        assert!(p.keeps_both_unets());
        p.vram = Vram::Low;
        p.precision = Precision::F16;
        assert!(p.text_device().is_cpu());
        // On the CPU already: the requested precision stays.
        assert_eq!(p.text_precision(), Precision::F16);
    }

    #[test]
    fn auto_precision_is_f32_on_the_cpu() {
        assert_eq!(Precision::Auto.dtype_on(&Device::Cpu), DType::F32);
        assert_eq!(Precision::F16.dtype_on(&Device::Cpu), DType::F16);
    }

    #[test]
    fn devices_open_or_say_how_to_get_them() {
        assert!(open_device(DeviceChoice::Cpu).unwrap().is_cpu());
        if !candle_core::utils::cuda_is_available() {
            let e = open_device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !candle_core::utils::metal_is_available() {
            let e = open_device(DeviceChoice::Metal(0)).unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
            // Without GPU backends, auto is the CPU.
            if !candle_core::utils::cuda_is_available() {
                assert!(open_device(DeviceChoice::Auto).unwrap().is_cpu());
            }
        }
    }
}
