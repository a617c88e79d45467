//! The RRDB upscaler against spandrel: untiled within 1e-4 of max, Fooocus' tiling within 1e-4
//! of the reference's tiled output, and the seam (tiled vs untiled) no larger than the
//! reference's own.

use candle_core::Device;
use fooocus::nets::esrgan::{load_upscaler, Rrdb};
use fooocus::nn::tiling::Tiles;
use fooocus::nn::Kernels;

use super::{fixture, spec, tensors, usize_of};
use crate::common::{assert_close, max_abs};

fn network(name: &str) -> Rrdb {
    let weights = load_upscaler(&fixture(name)).unwrap();
    Rrdb::new(weights, &Device::Cpu, Kernels::default()).unwrap()
}

#[test]
fn the_configuration_is_read_from_the_weights() {
    let s = spec();
    let c = &s["upscaler"]["config"];
    for name in ["upscaler.pth", "upscaler_new_layout.safetensors"] {
        let got = *network(name).config();
        assert_eq!(got.in_channels, usize_of(&c["in_nc"]), "{name}");
        assert_eq!(got.out_channels, usize_of(&c["out_nc"]), "{name}");
        assert_eq!(got.features, usize_of(&c["nf"]), "{name}");
        assert_eq!(got.growth, usize_of(&c["gc"]), "{name}");
        assert_eq!(got.blocks, usize_of(&c["nb"]), "{name}");
        assert_eq!(got.scale, usize_of(&c["scale"]), "{name}");
    }
}

#[test]
fn rrdb_matches_spandrel_in_both_layouts() {
    let t = tensors();
    let input = t.get("rrdb.input");
    for name in ["upscaler.pth", "upscaler_new_layout.safetensors"] {
        let out = network(name).forward(&input).unwrap();
        assert_close(&format!("rrdb {name}"), &out, &t.get("rrdb.output"), 1e-4);
    }
}

#[test]
fn tiled_rrdb_matches_the_reference_tiling() {
    let s = spec();
    let c = &s["upscaler"]["config"];
    let t = tensors();
    let net = network("upscaler.pth");
    let tiles = Tiles::square(usize_of(&c["tile"]), usize_of(&c["overlap"]));
    let tiled = net.upscale_tiled(&t.get("rrdb.input"), tiles).unwrap();
    assert_close("tiled rrdb", &tiled, &t.get("rrdb.tiled_output"), 1e-4);
    let whole = net.forward(&t.get("rrdb.input")).unwrap();
    let seam = max_abs(&(tiled - whole).unwrap());
    let reference_seam = s["upscaler"]["tiled_vs_untiled_max_abs"].as_f64().unwrap() as f32;
    println!("rrdb seam: tiled vs untiled max abs {seam:.4} (reference {reference_seam:.4})");
    assert!(
        seam <= reference_seam + 1e-4,
        "seam {seam} vs {reference_seam}"
    );
}
