"""Deterministic writers and small helpers shared by every part of the generator."""
import json
import os
import struct
import zlib

import numpy as np
import torch
from safetensors.torch import save_file


def setup_torch(threads=2):
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(False)


def fp16_exact(t):
    """Round a float tensor to fp16 and back: the value stored on disk."""
    return t.detach().to(torch.float16).to(torch.float32)


_DTYPES = {torch.int64: ("I64", 8), torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.uint8: ("U8", 1)}
_RANK = {"I64": 0, "F32": 1, "F16": 2, "U8": 3}  # the safetensors writer's order: larger dtype ids first


def save_tensors(path, tensors, metadata=None):
    """safetensors file with a fully determined header: metadata keys sorted (the library's own
    writer orders them by a hash map, differently on every run), tensors ordered like the
    library does (by dtype, then name), compact JSON padded with spaces to a multiple of 8."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = {"format": "pt"}
    if metadata:
        meta.update(metadata)
    items = []
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        dt, size = _DTYPES[v.dtype]
        items.append((_RANK[dt], k, dt, v))
    items.sort(key=lambda t: (t[0], t[1]))
    header = {"__metadata__": dict(sorted(meta.items()))}
    blobs, off = [], 0
    for _, k, dt, v in items:
        b = v.numpy().tobytes() if v.dtype != torch.float16 else v.view(torch.int16).numpy().tobytes()
        header[k] = {"dtype": dt, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def check_writer():
    """Our writer and safetensors' give the same bytes for single-key metadata."""
    import tempfile
    from safetensors.torch import load_file
    t = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor([1, 2], dtype=torch.int64),
         "c": torch.tensor(1.5, dtype=torch.float16), "d": torch.randn(3, 2).to(torch.float16)}
    with tempfile.TemporaryDirectory() as d:
        save_tensors(os.path.join(d, "x", "a.safetensors"), t)
        save_file(t, os.path.join(d, "b.safetensors"), metadata={"format": "pt"})
        a = open(os.path.join(d, "x", "a.safetensors"), "rb").read()
        b = open(os.path.join(d, "b.safetensors"), "rb").read()
        assert a == b
        back = load_file(os.path.join(d, "x", "a.safetensors"))
        assert all(torch.equal(back[k], t[k]) for k in t)


def _plain(o):
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, torch.Tensor):
        return _plain(o.tolist())
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    return o


def save_json(path, obj):
    """JSON in insertion order, 2-space indent, repr-exact floats, trailing newline."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(_plain(obj), indent=2, ensure_ascii=True, allow_nan=False))
        f.write("\n")


def to_uint8_image(image):
    """[1,3,H,W] decoder output -> HxWx3 uint8 with truncation (ComfyUI/Fooocus rule)."""
    x = image[0].detach().to(torch.float32)
    x = torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)
    x = (255.0 * x).permute(1, 2, 0).numpy()
    return np.clip(x, 0, 255).astype(np.uint8)


def write_png(path, image):
    """Minimal PNG writer (RGB8, no filter, zlib level 9, no time or text chunks)."""
    rgb = to_uint8_image(image)
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(png)
    return rgb


def rel(a, b):
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def load_kdiffusion_sampling():
    """Import k_diffusion.sampling without the package __init__ (which pulls optional deps)."""
    import importlib.util
    import sys
    import types

    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    import k_diffusion.sampling as sampling

    return sampling


def versions():
    import importlib.metadata as md

    out = {}
    for name in ["torch", "diffusers", "transformers", "tokenizers", "safetensors", "k-diffusion", "scipy", "numpy", "open_clip_torch"]:
        out[name] = md.version(name)
    return out
