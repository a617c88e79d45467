"""The image-to-image folder: the ESRGAN upscaler (RRDBNet) on tiny random weights in the original
key layout, checked against spandrel; Fooocus' tiled processing (`tiled_scale`, written from its
description) for the upscaler and the three-shape VAE encode and decode; PIL's Lanczos resize
rules; and whole Vary (Subtle) and Upscale (2x) runs, plus Fast 2x, on the tiny SDXL models
(behaviour of lllyasviel/Fooocus v2.5.5 as restated in ../shared/reference/fooocus-2x.md)."""
import hashlib
import io
import math
import os
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from . import config as C
from .engine import karras
from .fooocus import sample, stages
from .util import rel, save_json, save_tensors

# ----------------------------------------------------------------------------- the upscaler

def rrdb_state(cfg, gen):
    """A random RRDBNet in ESRGAN's "old" layout (`model.N`, `model.1.sub.I.RDBJ.convK.0`), fp16
    values. Convolutions are N(0, gain^2 / fan_in); the last one is scaled down and biased to 0.5
    so that outputs land mostly inside [0, 1] (a saturated image would test little)."""
    nf, gc, nb = cfg["nf"], cfg["gc"], cfg["nb"]
    sd = OrderedDict()

    def conv(name, cout, cin, gain=1.0, bias=0.0):
        w = torch.randn([cout, cin, 3, 3], generator=gen) * (gain / math.sqrt(cin * 9))
        sd[f"{name}.weight"] = w.to(torch.float16)
        sd[f"{name}.bias"] = (torch.randn([cout], generator=gen) * 0.02 + bias).to(torch.float16)

    conv("model.0", nf, cfg["in_nc"])
    for i in range(nb):
        for j in range(1, 4):
            for k in range(1, 6):
                cin = nf + (k - 1) * gc
                conv(f"model.1.sub.{i}.RDB{j}.conv{k}.0", nf if k == 5 else gc, cin, gain=1.4)
    conv(f"model.1.sub.{nb}", nf, nf)
    ups = int(math.log2(cfg["scale"]))
    for u in range(ups):
        conv(f"model.{3 * (u + 1)}", nf, nf, gain=1.4)
    hr = 3 * ups + 2
    conv(f"model.{hr}", nf, nf, gain=1.4)
    conv(f"model.{hr + 2}", cfg["out_nc"], nf, gain=0.25, bias=0.5)
    return sd


def fooocus_names(sd):
    """The upscaler file spells the dense-block level `residual_block_<j>` (Fooocus renames it to
    `RDB<j>` before loading)."""
    return OrderedDict((k.replace(".RDB", ".residual_block_"), v) for k, v in sd.items())


def new_layout(sd, nb, scale):
    """The same weights in the "new" ESRGAN layout (`conv_first`, `RRDB_trunk.I.RDBJ.convK`,
    `trunk_conv`, `upconvU`, `HRconv`, `conv_last`)."""
    ups = int(math.log2(scale))
    out = OrderedDict()
    for k, v in sd.items():
        parts = k.split(".")
        idx = int(parts[1])
        if idx == 0:
            name = "conv_first." + parts[-1]
        elif idx == 1 and parts[3] == str(nb):
            name = "trunk_conv." + parts[-1]
        elif idx == 1:
            name = f"RRDB_trunk.{parts[3]}.{parts[4]}.{parts[5]}.{parts[-1]}"
        elif idx <= 3 * ups:
            name = f"upconv{idx // 3}.{parts[-1]}"
        elif idx == 3 * ups + 2:
            name = "HRconv." + parts[-1]
        else:
            name = "conv_last." + parts[-1]
        out[name] = v
    return out


def write_pth(path, sd):
    """`torch.save` of a flat state dict (the upscaler file's format), made byte-reproducible:
    the zip's entries are rewritten with a fixed time stamp and the random serialisation id
    replaced by a digest of the tensors."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in sd.values())).hexdigest()[:20]
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("serialization_id"):
                data = digest.encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(2026, 1, 1, 0, 0, 0))
            fixed.compress_type = zipfile.ZIP_STORED
            dst.writestr(fixed, data)
    with open(path, "wb") as f:
        f.write(out.getvalue())
    back = torch.load(path, weights_only=True)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def spandrel_model(sd):
    import spandrel
    desc = spandrel.ModelLoader().load_from_state_dict({k: v.float() for k, v in sd.items()})
    return desc.model.eval().float(), desc


def tiled_scale(x, fn, tile_x, tile_y, overlap, scale, out_c):
    """Fooocus' generic tiling: tiles at 0, t - o, 2 (t - o), ... cut at the border, each result
    weighted by a feather that ramps as (k + 1) / F over F = round(o s) output cells on all four
    edges, summed, and divided by the summed weights."""
    B, _, H, W = x.shape
    out = torch.zeros([B, out_c, round(H * scale), round(W * scale)])
    div = torch.zeros_like(out)
    feather = round(overlap * scale)
    for b in range(B):
        for y in range(0, H, tile_y - overlap):
            for x0 in range(0, W, tile_x - overlap):
                part = fn(x[b:b + 1, :, y:y + tile_y, x0:x0 + tile_x])
                mask = torch.ones_like(part)
                th, tw = part.shape[2], part.shape[3]
                # Python slices, as in the original: on a tile narrower than the feather, a
                # slice past the start wraps (negative indices) and scales a cell again.
                for t in range(feather):
                    f = (t + 1) / feather
                    mask[:, :, t:1 + t, :] *= f
                    mask[:, :, th - 1 - t:th - t, :] *= f
                    mask[:, :, :, t:1 + t] *= f
                    mask[:, :, :, tw - 1 - t:tw - t] *= f
                oy, ox = round(y * scale), round(x0 * scale)
                out[b:b + 1, :, oy:oy + th, ox:ox + tw] += part * mask
                div[b:b + 1, :, oy:oy + th, ox:ox + tw] += mask
    return out / div


def to_uint8(x01):
    """[1, 3, H, W] in [0, 1] -> H x W x 3 uint8: clamp, x 255, truncate."""
    return (x01[0].clamp(0, 1) * 255.0).permute(1, 2, 0).numpy().astype(np.uint8)


def from_uint8(a):
    return torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def upscale_network(net, image, cfg):
    """Fooocus' upscaler call: uint8 -> [0, 1] -> the network on 512-px tiles overlapping 32 px
    -> clamp -> uint8."""
    fn = lambda t: net(t)
    return to_uint8(tiled_scale(from_uint8(image), fn, cfg["tile"], cfg["tile"], cfg["overlap"], cfg["scale"], 3))


# ----------------------------------------------------------------------------- resize rules

def shape_ceil(h, w):
    return math.ceil(math.sqrt(h * w) / 64.0) * 64.0


def resample(a, w, h):
    return np.array(Image.fromarray(a).resize((int(w), int(h)), resample=Image.LANCZOS))


def set_shape_ceil(a, target):
    H, W = a.shape[:2]
    h, w = H, W
    for _ in range(256):
        c = shape_ceil(h, w)
        if abs(c - target) < 0.1:
            break
        k = target / c
        h, w = int(round(h * k / 64.0) * 64), int(round(w * k / 64.0) * 64)
    if (h, w) == (H, W):
        return a
    return resample(a, w, h)


def vary_resize(a):
    c = min(max(shape_ceil(*a.shape[:2]), 1024), 2048)
    return set_shape_ceil(a, c)


def upscale_target(sr, h, w, f):
    """Step 3 of apply_upscale: the SR image brought to the target (or to shape ceil 1024)."""
    c = shape_ceil(h * f, w * f)
    if c < 1024:
        return set_shape_ceil(sr, 1024), 1024.0
    return resample(sr, w * f, h * f), c


# ----------------------------------------------------------------------------- the VAE

def crop8(x):
    _, _, H, W = x.shape
    h, w = H // 8 * 8, W // 8 * 8
    oy, ox = (H % 8) // 2, (W % 8) // 2
    return x[:, :, oy:oy + h, ox:ox + w]


def encode_mean(vae, pixels01):
    return vae.encode(pixels01 * 2.0 - 1.0).latent_dist.mean


def vae_encode(vae, pixels01, tiled):
    """Raw latent (posterior mean, unscaled) of [0, 1] pixels cropped to multiples of 8; tiled:
    three tilings (512 x 512, 1024 wide x 256 high, 256 wide x 1024 high px, overlap 64)
    averaged."""
    x = crop8(pixels01)
    if not tiled:
        return encode_mean(vae, x)
    fn = lambda t: encode_mean(vae, t)
    s = tiled_scale(x, fn, 512, 512, 64, 1 / 8, 4)
    s = s + tiled_scale(x, fn, 1024, 256, 64, 1 / 8, 4)
    s = s + tiled_scale(x, fn, 256, 1024, 64, 1 / 8, 4)
    return s / 3.0


def vae_decode01(vae, latent, tiled):
    """Model latent -> [0, 1] pixels; tiled: three tilings (32 wide x 128 high, 128 x 32, 64 x 64
    latent cells, overlap 16) of (decode + 1), averaged, halved, clamped."""
    z = latent / C.VAE_SCALE
    if not tiled:
        return ((vae.decode(z).sample + 1.0) / 2.0).clamp(0, 1)
    fn = lambda t: vae.decode(t).sample + 1.0
    s = tiled_scale(z, fn, 32, 128, 16, 8, 3)
    s = s + tiled_scale(z, fn, 128, 32, 16, 8, 3)
    s = s + tiled_scale(z, fn, 64, 64, 16, 8, 3)
    return (s / 3.0 / 2.0).clamp(0, 1)


# ----------------------------------------------------------------------------- inputs

def test_image(h, w, seed):
    """A deterministic uint8 photo stand-in: smooth colour fields, an edge and sparse specks (a
    resampler's ringing shows on both; the PNG stays small)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    r = 0.5 + 0.4 * torch.sin(6.0 * xx + 2.0 * yy)
    gch = 0.5 + 0.4 * torch.cos(5.0 * yy - 3.0 * xx)
    b = ((xx - 0.6) ** 2 + (yy - 0.4) ** 2 < 0.08).float() * 0.6 + 0.2
    img = torch.stack([r, gch, b])
    img[:, ::7, ::5] += torch.rand([3, (h + 6) // 7, (w + 4) // 5], generator=g) * 0.3 - 0.15
    return (img.clamp(0, 1) * 255.0).permute(1, 2, 0).numpy().astype(np.uint8)


# ----------------------------------------------------------------------------- whole runs

def write_png(out, name, a):
    Image.fromarray(a).save(os.path.join(out, name), optimize=False, compress_level=9)


def crop(t, name, image01):
    """A square of the decoded image (float and uint8) at the configured corner."""
    y, x, n = C.CROP
    part = image01[:, :, y:y + n, x:x + n].contiguous()
    t[f"{name}.image_crop"] = part
    t[f"{name}.png_crop"] = torch.from_numpy(to_uint8(part).copy())

def diffuse(models, ref, start_latent, steps, denoise, seed, s, record_name, t):
    """Samples from a raw start latent: the schedule of int(steps / d) cut to its last steps + 1
    values, x = z 0.13025 + noise sigma_0, Fooocus' model function with the refiner swap at
    round(performance steps * switch) (Fooocus' apply_overrides: not the forced or the Upscale
    step count), dpmpp_2m_sde (midpoint) with the seed's stream continued as its noise."""
    _, _, h, w = start_latent.shape
    H, W = h * 8, w * 8
    rows = [C.POSITIVE, C.NEGATIVE]
    base, refiner, _ = stages(models, ref["context"][rows], ref["pooled"][rows], H, W, s)
    total = int(steps / denoise)
    sigmas = karras(total, ref["sig"])[-(steps + 1):]
    switch = round(C.I2I_SETTINGS["performance_steps"] * s["refiner_switch"])
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn([1, 4, h, w], generator=gen)
    sde_noise = torch.randn([steps - 1, 1, 4, h, w], generator=gen)
    z = start_latent * C.VAE_SCALE
    x_init = z + noise * sigmas[0]
    final, record, _ = sample(base, refiner, s, switch, ref["logsig"], x_init, sigmas, sde_noise)
    t.update({f"{record_name}.start_latent": z, f"{record_name}.sigmas": sigmas,
              f"{record_name}.x_init": x_init, f"{record_name}.final_latent": final})
    return final, {"sigmas": sigmas.tolist(), "total_steps": total, "switch": switch,
                   "models": [int(r["model"]) for r in record], "timesteps": [int(r["t"]) for r in record],
                   "final_latent_std": float(final.std())}


def vary_run(models, ref, out, t):
    cfg = C.VARY
    s = dict(C.FOOOCUS, refiner_switch=C.I2I_SETTINGS["refiner_switch"])
    src = test_image(*cfg["input_hw"], cfg["input_seed"])
    write_png(out, "vary_input.png", src)
    write_png(out, "reduced.png", resample(src, *C.REDUCED_WH))
    resized = vary_resize(src)
    z = vae_encode(models.vae, from_uint8(resized), tiled=False)
    final, info = diffuse(models, ref, z, cfg["steps"], cfg["denoise"], cfg["seed"], s, "vary", t)
    image01 = vae_decode01(models.vae, final, tiled=False)
    write_png(out, "vary_resized.png", resized)
    crop(t, "vary", image01)
    return dict(cfg, settings=s, resized_hw=list(resized.shape[:2]), **info)


def upscale_run(models, ref, net, out, t):
    cfg, up = C.UPSCALE, C.RRDB
    s = dict(C.FOOOCUS, refiner_switch=C.I2I_SETTINGS["refiner_switch"])
    src = test_image(*cfg["input_hw"], cfg["input_seed"])
    write_png(out, "upscale_input.png", src)
    sr = upscale_network(net, src, dict(up, tile=512, overlap=32))
    h, w = src.shape[:2]
    target, c = upscale_target(sr, h, w, cfg["factor"])
    write_png(out, "upscale_sr.png", sr)
    write_png(out, "upscale_resized.png", target)
    z = vae_encode(models.vae, from_uint8(target), tiled=True)
    untiled_z = vae_encode(models.vae, from_uint8(target), tiled=False)
    final, info = diffuse(models, ref, z, cfg["steps"], cfg["denoise"], cfg["seed"], s, "upscale", t)
    image01 = vae_decode01(models.vae, final, tiled=True)
    crop(t, "upscale", image01)
    info["tiled_vae"] = {
        "start_latent_tiled_vs_untiled_rel": rel(z, untiled_z),
        "image_tiled_vs_untiled_max_abs": float((image01 - vae_decode01(models.vae, final, tiled=False)).abs().max()),
    }
    return dict(cfg, settings=s, shape_ceil=c, sr_hw=list(sr.shape[:2]), resized_hw=list(target.shape[:2]), **info)


# ----------------------------------------------------------------------------- the folder

def upscaler_part(out, t):
    cfg = C.RRDB
    sd = rrdb_state(cfg, torch.Generator().manual_seed(cfg["seed"]))
    write_pth(os.path.join(out, "upscaler.pth"), fooocus_names(sd))
    save_tensors(os.path.join(out, "upscaler_new_layout.safetensors"), new_layout(sd, cfg["nb"], cfg["scale"]))
    net, desc = spandrel_model(sd)
    assert desc.scale == cfg["scale"] and desc.input_channels == cfg["in_nc"]
    src = test_image(*cfg["input_hw"], cfg["input_seed"])
    x = from_uint8(src)
    whole = net(x)
    tiled = tiled_scale(x, net, cfg["tile"], cfg["tile"], cfg["overlap"], cfg["scale"], cfg["out_nc"])
    t.update({"rrdb.input": x, "rrdb.output": whole, "rrdb.tiled_output": tiled})
    inside = float(((whole >= 0) & (whole <= 1)).float().mean())
    return net, {
        "config": cfg, "spandrel": {"scale": desc.scale, "tags": desc.tags},
        "files": {"upscaler.pth": "torch.save of the fp16 state dict, old ESRGAN layout with 'residual_block_<j>' for 'RDB<j>' (as Fooocus' file)",
                  "upscaler_new_layout.safetensors": "the same weights in the new layout (conv_first, RRDB_trunk, trunk_conv, upconvN, HRconv, conv_last)"},
        "output_inside_0_1": inside,
        "tiled_vs_untiled_max_abs": float((tiled - whole).abs().max()),
    }


def generate(models, ref, out, sdxl_dir):
    os.makedirs(out, exist_ok=True)
    t = {}
    net, upscaler = upscaler_part(out, t)
    vary = vary_run(models, ref, out, t)
    upscale = upscale_run(models, ref, net, out, t)
    save_tensors(os.path.join(out, "image_to_image.safetensors"), t)
    digests = {}
    for name in ["sdxl_base.safetensors", "sdxl_refiner.safetensors"]:
        with open(os.path.join(sdxl_dir, name), "rb") as f:
            digests[name] = hashlib.sha256(f.read()).hexdigest()
    save_json(os.path.join(out, "image_to_image.json"), {
        "sdxl_fixtures": os.path.relpath(sdxl_dir, out), "sdxl_sha256": digests,
        "performance": C.I2I_SETTINGS["performance"], "performance_steps": C.I2I_SETTINGS["performance_steps"],
        "positive": C.PROMPTS[C.POSITIVE], "negative": C.PROMPTS[C.NEGATIVE],
        "upscaler": upscaler, "vary": vary, "upscale": upscale,
        "crop": {"y": C.CROP[0], "x": C.CROP[1], "size": C.CROP[2]},
        "rules": {
            "pixels": "uint8 / 255 as float32; back: clamp(0, 1) * 255 truncated",
            "resize": "PIL Image.resize(LANCZOS) to (int(w), int(h)); set_image_shape_ceil iterates H, W <- round(X k / 64) 64 (half to even) until |shape_ceil - target| < 0.1, unchanged sizes return the input",
            "vae_encode": "centre crop to multiples of 8, 2x - 1, posterior mean (not a sample), x 0.13025 for the start latent",
            "tiled_encode": "mean of tiled_scale with (512, 512), (1024 wide, 256 high), (256, 1024) px tiles, overlap 64, scale 1/8",
            "tiled_decode": "clamp((mean of tiled_scale of decode + 1 with (32 wide, 128 high), (128, 32), (64, 64) latent tiles, overlap 16, scale 8) / 2, 0, 1)",
            "schedule": "karras(int(steps / denoise)) keeping its last steps + 1 values",
            "start": "x = z + noise sigma_0; noise = randn([1, 4, h, w], torch.Generator().manual_seed(seed)), the SDE noise continues the same generator",
            "upscaler_tiling": "tiled_scale: tiles at multiples of tile - overlap, cut at the border, feather (k + 1) / F, F = round(overlap * scale), on every edge",
        },
        "keys": "image_to_image.safetensors: rrdb.{input, output, tiled_output} [1,3,H,W] in [0,1]; vary. and upscale.{start_latent (x 0.13025; upscale: tiled encode), sigmas, x_init, final_latent, image_crop ([1,3,S,S] float [0,1] of the decode at crop y, x), png_crop (uint8 SxSx3)}",
        "pngs": "vary_input, vary_resized (the input brought to the Vary size), reduced (vary_input reduced by Lanczos), upscale_input, upscale_sr (the upscaler's uint8 output), upscale_resized (SR brought to the target; with factor 2 this is also the Fast 2x result)",
    })
