#!/usr/bin/env python3
"""Writes the seed inputs under fuzz/seeds/<target>/ (needs Pillow for the images).

The seeds are committed; rerun this only to change them."""
import io
import json
import os
import struct

from PIL import Image, PngImagePlugin

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + blob


E = ("F16", [0], b"")
put("checkpoint", "base", safetensors({
    "model.diffusion_model.label_emb.0.0.weight": ("F16", [2], b"\x00\x3c\x00\x40"),
    "model.diffusion_model.input_blocks.0.0.weight": ("BF16", [1, 2], b"\x80\x3f\x00\x40"),
    "model.diffusion_model.output_blocks.11.1.weight": ("F32", [1], b"\x00\x00\x80\x3f"),
    "conditioner.embedders.0.transformer.text_model.x": E,
    "conditioner.embedders.1.model.x": E,
    "first_stage_model.decoder.conv_in.weight": E,
}, {"format": "pt"}))
put("checkpoint", "refiner", safetensors({
    "model.diffusion_model.label_emb.0.0.weight": E,
    "conditioner.embedders.0.model.x": ("I64", [1], b"\x01" + b"\x00" * 7),
}))
put("checkpoint", "lora", safetensors({
    "lora_unet_down_blocks_0.lora_down.weight": ("F16", [1, 1], b"\x00\x3c"),
    "lora_te1_text_model.alpha": ("U8", [1], b"\x01"),
}))
put("checkpoint", "sd1", safetensors({"cond_stage_model.transformer.x": E}))
put("checkpoint", "diffusers", safetensors({"down_blocks.0.x": ("F64", [1], b"\x00" * 8)}))
put("checkpoint", "truncated", safetensors({"a": ("F32", [4], b"\x00" * 16)})[:-5])

META = {
    "prompt": "a (cat:1.2) on a mat", "negative_prompt": "blurry", "styles": ["Fooocus V2", "Base: Cinematic"],
    "performance": "Speed", "steps": 30, "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
    "guidance_scale": 7.0, "sharpness": 2.0, "adm_scaler_positive": 1.5, "adm_scaler_negative": 0.8,
    "adm_scaler_end": 0.3, "adaptive_cfg": 7.0, "clip_skip": 2, "seed": 12345, "width": 1152, "height": 896,
    "base_model": "sd_xl_base_1.0_0.9vae.safetensors", "base_model_hash": "0123456789",
    "refiner_model": "sd_xl_refiner_1.0_0.9vae.safetensors", "refiner_switch": 0.667,
    "loras": [{"name": "sd_xl_offset_example-lora_1.0.safetensors", "hash": "abcdef0123", "weight": 0.5}],
    "version": "Fooocus-rs v0.1.0", "output_format": "png",
}
A1111 = ("a (cat:1.2) on a mat\nsecond line\nNegative prompt: blurry\nugly\n"
         "Steps: 30, Sampler: DPM++ 2M SDE Karras, Schedule type: Karras, CFG scale: 7, Seed: 12345, "
         "Size: 1152x896, Model hash: 0123456789, Model: sd_xl_base_1.0_0.9vae, Clip skip: 2, "
         "Refiner: sd_xl_refiner_1.0_0.9vae [abcdef0123], Refiner switch at: 0.667, "
         "Lora hashes: \"sd_xl_offset: abcdef0123, other: 1234\", Lora weights: \"sd_xl_offset: 0.5\", "
         "Styles: \"['Fooocus V2', 'Base: \\\\'Q\\\\'']\", Performance: Speed, Sharpness: 2, "
         "ADM Guidance: \"(1.5, 0.8, 0.3)\", Adaptive CFG: 7, Version: Fooocus v2.5.5")
put("a1111", "full", A1111)
put("a1111", "one_line", "Steps: 4, Sampler: Euler a, CFG scale: 1")
put("a1111", "quoted", 'p\nSteps: 1, Styles: ["a", "b\\"c"], Version: "x, y", bad key!: 1, Seed: 9')

img = Image.new("RGB", (2, 2), (200, 10, 10))
info = PngImagePlugin.PngInfo()
info.add_text("parameters", A1111)
info.add_itxt("fooocus-rs", json.dumps(META))
b = io.BytesIO(); img.save(b, "PNG", pnginfo=info); put("image_metadata", "png_both", b.getvalue())
info = PngImagePlugin.PngInfo()
info.add_text("parameters", A1111, zip=True)
b = io.BytesIO(); img.save(b, "PNG", pnginfo=info); put("image_metadata", "png_ztxt", b.getvalue())


def exif(unicode=True):
    ex = Image.Exif()
    ex[0x0131] = "Fooocus-rs"
    sub = ex.get_ifd(0x8769)
    text = A1111[:300]
    if unicode:
        sub[0x9286] = b"UNICODE\0" + text.encode("utf-16-le")
    else:
        sub[0x9286] = b"ASCII\0\0\0" + text.encode()
    sub[0x927C] = json.dumps(META).encode()
    return ex.tobytes()


b = io.BytesIO(); img.save(b, "JPEG", exif=exif()); put("image_metadata", "jpeg_exif", b.getvalue())
b = io.BytesIO(); img.save(b, "WEBP", exif=exif(unicode=False)); put("image_metadata", "webp_exif", b.getvalue())
put("image_metadata", "exif_block", exif())
put("image_metadata", "json", json.dumps(META))

put("prompt_weights", "mixed", "a (cat:1.2) ((on)) a [mat] \\(literal\\) (x:y:0.5) (unclosed ) stray)")
put("prompt_weights", "nested", "((((a (b:0.3) c))))")

put("plan", "empty", "{}")
put("plan", "full", json.dumps({
    "prompt": "a __color__ cat [[red,blue]]", "negative_prompt": "__shade__", "styles": ["Base: Cinematic"],
    "performance": "Quality", "aspect_ratio": "1024×1024", "image_number": 2, "seed": 42,
    "base_model": "sd_xl_base_1.0_0.9vae", "refiner_model": "sd_xl_refiner_1.0_0.9vae.safetensors",
    "refiner_switch": 0.5, "loras": [{"name": "sub/style.safetensors", "weight": 0.7}],
    "guidance_scale": 4.0, "sharpness": 2.0, "sampler": "euler", "scheduler": "karras", "steps": 20,
    "clip_skip": 2, "adm_positive": 1.5, "adm_negative": 0.8, "adm_end": 0.3, "adaptive_cfg": 7.0,
    "output_format": "webp", "save_metadata": False}))
put("plan", "custom_size", json.dumps({"prompt": "x", "width": 1024, "height": 512, "performance": "Extreme Speed",
                                       "styles": ["Random Style", "sai-3d-model"]}))
put("plan", "lightning", json.dumps({"prompt": "__bad__", "performance": "Lightning", "base_model": "sd15"}))
put("plan", "hyper", json.dumps({"performance": "Hyper-SD", "refiner_model": "None", "loras": [{"name": "not_a_lora", "weight": 3}]}))

# The wildcard target's input is `arbitrary` bytes: plain text seeds still give it a start.
put("wildcards", "plain", "__scene__ [[a,b,c]] __fz__ __loop__")
