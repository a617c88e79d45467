//! Shared helpers of the integration tests: fixture folders, tensor files, tolerances.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use fooocus::nets::sdxl::shapes::HeadDims;

/// A fixture folder: the environment variable `var`, else `fixtures/<default>` of the repository
/// (made by `refgen`, see `fixtures/README.md`).
fn fixture_folder(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(default),
    }
}

/// The tiny-sdxl fixture folder: `FOOOCUS_FIXTURES`, or the repository's `fixtures/tiny-sdxl`.
pub fn fixtures() -> PathBuf {
    fixture_folder("FOOOCUS_FIXTURES", "tiny-sdxl")
}

/// The image-to-image folder (upscaler, Vary and Upscale runs): `FOOOCUS_IMAGE_FIXTURES`, or the
/// repository's `fixtures/image-to-image`.
pub fn image_fixtures() -> PathBuf {
    fixture_folder("FOOOCUS_IMAGE_FIXTURES", "image-to-image")
}

/// The full-size layout folder: `FOOOCUS_LAYOUTS`, or the repository's `fixtures/layouts`.
pub fn layouts() -> PathBuf {
    fixture_folder("FOOOCUS_LAYOUTS", "layouts")
}

pub fn json(relative: &str) -> serde_json::Value {
    let path = fixtures().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct Tensors {
    name: String,
    map: HashMap<String, Tensor>,
}

impl Tensors {
    pub fn open(relative: &str) -> Self {
        Self::open_at(&fixtures().join(relative))
    }

    pub fn open_at(path: &std::path::Path) -> Self {
        let relative = path.display().to_string();
        let map = candle_core::safetensors::load(path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            name: relative,
            map,
        }
    }

    pub fn get(&self, key: &str) -> Tensor {
        self.map
            .get(key)
            .unwrap_or_else(|| panic!("{} has no tensor {key}", self.name))
            .clone()
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn ids(&self, key: &str) -> Tensor {
        self.get(key).to_dtype(DType::U32).unwrap()
    }
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// max|actual − expected| / max|expected| (`actual` on any device, in any float dtype).
pub fn rel_err(actual: &Tensor, expected: &Tensor) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shapes differ");
    let actual = actual.to_device(&Device::Cpu).unwrap();
    let expected = expected.to_device(&Device::Cpu).unwrap();
    let diff = (actual.to_dtype(DType::F32).unwrap() - &expected).unwrap();
    max_abs(&diff) / max_abs(&expected)
}

/// Asserts `rel_err ≤ tol` and prints the figure.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    let err = rel_err(actual, expected);
    println!("{what}: relative error {err:.3e} (tolerance {tol:.0e})");
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e}"
    );
}

/// Head widths of the tiny networks from `tiny_configs.json` (they are not visible in the
/// weights); `unet_key` is `base_unet_sgm` or `refiner_unet_sgm`.
pub fn tiny_heads(unet_key: &str) -> HeadDims {
    let cfg = json("tiny_configs.json");
    let n = |v: &serde_json::Value| v.as_u64().expect("a count") as usize;
    let clip = |k: &str| n(&cfg[k]["hidden_size"]) / n(&cfg[k]["num_attention_heads"]);
    HeadDims {
        clip_l: clip("clip_l"),
        clip_g: clip("clip_g"),
        unet: n(&cfg[unet_key]["num_head_channels"]),
    }
}

/// A configuration over the tiny fixtures with its writable folders (wildcards, an extra LoRA
/// folder, outputs, the upscaler's folder with the fixture upscaler) in `dir`: the repository's
/// styles, the fixture tokenizer, the tiny head sizes.
pub fn tiny_config(dir: &std::path::Path) -> fooocus::config::Config {
    use fooocus::config::{Config, HeadDimsConfig};
    let fixtures = fixtures();
    let mut config = Config::default();
    config.paths.checkpoints = vec![fixtures.clone()];
    config.paths.loras = vec![fixtures.join("lora"), dir.join("loras")];
    config.paths.tokenizer = fixtures.join("tokenizer/clip-tokenizer.json");
    config.paths.styles = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("styles");
    config.paths.wildcards = dir.join("wildcards");
    config.paths.outputs = dir.join("outputs");
    // The fixture upscaler, installed (a user's is fetched on first use).
    config.paths.upscale_models = dir.join("upscale_models");
    std::fs::create_dir_all(&config.paths.upscale_models).unwrap();
    std::fs::copy(
        image_fixtures().join("upscaler.pth"),
        config
            .paths
            .upscale_models
            .join(fooocus::hub::UPSCALER_FILE),
    )
    .unwrap();
    std::fs::create_dir_all(&config.paths.wildcards).unwrap();
    std::fs::create_dir_all(dir.join("loras")).unwrap();
    for (file, key) in [
        ("sdxl_base.safetensors", "base_unet_sgm"),
        ("sdxl_refiner.safetensors", "refiner_unet_sgm"),
    ] {
        let h = tiny_heads(key);
        let heads = HeadDimsConfig {
            clip_l: h.clip_l,
            clip_g: h.clip_g,
            unet: h.unet,
        };
        config.head_dims.insert(file.into(), heads);
    }
    config
}

/// The tiny models with the default preset's tuning and no LoRA.
pub fn tiny_preset() -> fooocus::config::Preset {
    fooocus::config::Preset {
        base_model: "sdxl_base.safetensors".into(),
        refiner_model: Some("sdxl_refiner.safetensors".into()),
        loras: vec![],
        ..fooocus::config::Preset::default()
    }
}

/// The same setup as [`tiny_config`], written as `dir/config.toml` for the binary; returns its path.
pub fn write_tiny_config(dir: &std::path::Path) -> PathBuf {
    let config = tiny_config(dir);
    let list = |dirs: &[PathBuf]| {
        let quoted: Vec<String> = dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect();
        format!("[{}]", quoted.join(", "))
    };
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let mut text = format!(
        "[paths]\ncheckpoints = {}\nloras = {}\ntokenizer = {}\nstyles = {}\nwildcards = {}\n\
         outputs = {}\nupscale_models = {}\n\n[presets.default]\nbase_model = \"sdxl_base.safetensors\"\n\
         refiner_model = \"sdxl_refiner.safetensors\"\nloras = []\n",
        list(&config.paths.checkpoints),
        list(&config.paths.loras),
        path(&config.paths.tokenizer),
        path(&config.paths.styles),
        path(&config.paths.wildcards),
        path(&config.paths.outputs),
        path(&config.paths.upscale_models),
    );
    for (file, h) in &config.head_dims {
        text += &format!(
            "\n[head_dims.{file:?}]\nclip_l = {}\nclip_g = {}\nunet = {}\n",
            h.clip_l, h.clip_g, h.unet
        );
    }
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Module tolerance of the fixtures (f32, relative to the compared tensor's max).
pub const MODULE_TOL: f32 = 1e-4;
/// Our stated module tolerance in f16: f16 keeps 11 significant bits (unit roundoff 4.9e-4) and
/// the tiny networks chain a few dozen rounded layers, so 1e-2 of the tensor's max.
pub const F16_MODULE_TOL: f32 = 1e-2;
/// The same for bf16 (8 significant bits, unit roundoff 3.9e-3).
pub const BF16_MODULE_TOL: f32 = 5e-2;

/// One way the suites run the networks: a device and a precision, and whether the UNet's linear
/// layers multiply in bf16 (`--cpu-bf16`).
pub struct Compute {
    pub device: Device,
    pub precision: fooocus::runtime::Precision,
    pub bf16_products: bool,
}

impl Compute {
    pub fn dtype(&self) -> DType {
        self.precision.dtype_on(&self.device)
    }

    /// The tolerance for text encoders (and UNets) in this precision.
    pub fn module_tol(&self) -> f32 {
        match self.dtype() {
            DType::F16 => F16_MODULE_TOL,
            DType::BF16 => BF16_MODULE_TOL,
            _ => MODULE_TOL,
        }
    }

    /// The tolerance for UNets: the bf16 one where their linear layers multiply in bf16.
    pub fn unet_tol(&self) -> f32 {
        if self.bf16_products {
            BF16_MODULE_TOL
        } else {
            self.module_tol()
        }
    }

    /// `file`, building its text encoders and UNet in this precision.
    pub fn file(
        &self,
        mut file: fooocus::nets::sdxl::file::SdxlFile,
    ) -> fooocus::nets::sdxl::file::SdxlFile {
        file.precision = self.precision;
        file.bf16_products = self.bf16_products;
        file
    }

    /// A reference input on this device.
    pub fn put(&self, t: Tensor) -> Tensor {
        t.to_device(&self.device).unwrap()
    }

    pub fn label(&self) -> String {
        format!(
            "{} {:?}{}",
            fooocus::runtime::describe(&self.device),
            self.dtype(),
            if self.bf16_products {
                ", bf16 products"
            } else {
                ""
            }
        )
    }
}

/// The device of `FOOOCUS_TEST_DEVICE` (default `cpu`).
pub fn test_device() -> Device {
    use fooocus::runtime::{open_device, DeviceChoice};
    let name = std::env::var("FOOOCUS_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    open_device(name.parse::<DeviceChoice>().unwrap()).unwrap()
}

impl Compute {
    /// The reference setting: f32 on the CPU.
    pub fn cpu_f32() -> Compute {
        Compute {
            device: Device::Cpu,
            precision: fooocus::runtime::Precision::F32,
            bf16_products: false,
        }
    }
}

/// The computes the parity suites run in: `FOOOCUS_TEST_DEVICE` (default `cpu`; e.g. `cuda`)
/// in each of `FOOOCUS_TEST_PRECISIONS` (default `f32,f16,cpu-bf16`: the CPU path, the
/// half-precision path a GPU takes, checked here on the CPU, and the CPU path with the UNet's
/// linear layers in bf16; `cpu-bf16` is f32 with those products in bf16).
pub fn computes() -> Vec<Compute> {
    use fooocus::runtime::Precision;
    let device = test_device();
    let precisions =
        std::env::var("FOOOCUS_TEST_PRECISIONS").unwrap_or_else(|_| "f32,f16,cpu-bf16".into());
    precisions
        .split(',')
        .map(|p| match p.trim() {
            "cpu-bf16" => Compute {
                device: device.clone(),
                precision: Precision::F32,
                bf16_products: true,
            },
            p => Compute {
                device: device.clone(),
                precision: p.parse::<Precision>().unwrap(),
                bf16_products: false,
            },
        })
        .filter(|c| !c.bf16_products || c.device.is_cpu())
        .collect()
}

/// Whether the tests must not skip for a missing tool (`FOOOCUS_REQUIRE_ALL_TESTS=1`, as CI sets).
pub fn require_all_tests() -> bool {
    std::env::var("FOOOCUS_REQUIRE_ALL_TESTS").is_ok_and(|v| v == "1")
}

/// Whether `what` (a tool, a package) that a test needs is present. When it is not, with
/// `FOOOCUS_REQUIRE_ALL_TESTS=1` the test fails here; otherwise a loud SKIPPED line with
/// `install_hint` goes to stderr (past the test harness' capture, so it shows for a passing
/// test) and the caller returns early, passing.
pub fn require(present: bool, what: &str, install_hint: &str) -> bool {
    if present {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    assert!(
        !require_all_tests(),
        "{test}: {what} is missing and FOOOCUS_REQUIRE_ALL_TESTS=1; install it: {install_hint}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n**** SKIPPED {test}: {what} is missing. Install it with: {install_hint}\n\
         **** (set FOOOCUS_REQUIRE_ALL_TESTS=1 to make this a failure)\n"
    );
    false
}

/// Whether the command `name` (a name looked up on `PATH`, or a path) is there; see [`require`].
pub fn require_tool(name: &str, install_hint: &str) -> bool {
    let found = if name.contains(std::path::MAIN_SEPARATOR) || name.contains('/') {
        std::path::Path::new(name).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    require(found, name, install_hint)
}
