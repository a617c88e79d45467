"""Headers of full-size SDXL 1.0 base/refiner single files: the architectures are built on torch's
meta device (no memory) with diffusers/transformers, and renamed by models.py's mapping."""
import copy
import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from . import config as C
from . import models as M
from .util import save_json

BASE = dict(model_channels=320, channel_mult=[1, 2, 4], transformer_depth=[0, 2, 10], transformer_depth_middle=10,
            context_dim=2048, time_id_embed_dim=256, n_time_ids=6, adm_in_channels=1280 + 6 * 256)
REFINER = dict(model_channels=384, channel_mult=[1, 2, 4, 4], transformer_depth=[0, 4, 4, 0], transformer_depth_middle=4,
               context_dim=1280, time_id_embed_dim=256, n_time_ids=5, adm_in_channels=1280 + 5 * 256)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
VAE = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, norm_num_groups=32)
HEAD_DIM = 64


def unet(u):
    chans = [u["model_channels"] * m for m in u["channel_mult"]]
    cfg = dict(
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in u["transformer_depth"]],
        up_block_types=["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(u["transformer_depth"])],
        block_out_channels=chans, layers_per_block=2,
        transformer_layers_per_block=[max(d, 1) for d in u["transformer_depth"]],
        attention_head_dim=[c // HEAD_DIM for c in chans], cross_attention_dim=u["context_dim"],
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=u["time_id_embed_dim"],
        projection_class_embeddings_input_dim=u["adm_in_channels"],
    )
    with torch.device("meta"):
        m = UNet2DConditionModel(**cfg)
        tmp = copy.deepcopy(cfg)
        tmp["transformer_layers_per_block"] = tmp["transformer_layers_per_block"][:-1] + [u["transformer_depth_middle"]]
        m.mid_block = UNet2DConditionModel(**tmp).mid_block
    return m


def state_dicts():
    with torch.device("meta"):
        clip_l = CLIPTextModel(CLIPTextConfig(**CLIP_L))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
        vae = AutoencoderKL(**VAE)
    base = {}
    base.update(M.unet_to_sgm(unet(BASE).state_dict(), BASE))
    base.update(M.vae_to_ldm(vae.state_dict()))
    base.update(M.clip_l_to_sgm(clip_l))
    base.update(M.clip_g_to_openclip(clip_g, "conditioner.embedders.1.model."))
    refiner = {}
    refiner.update(M.unet_to_sgm(unet(REFINER).state_dict(), REFINER))
    refiner.update(M.vae_to_ldm(vae.state_dict()))
    refiner.update(M.clip_g_to_openclip(clip_g, "conditioner.embedders.0.model."))
    return base, refiner


def header(sd):
    """safetensors header of an fp16 single file: I64 tensors first, then F16, each by name."""
    items = [(k, "I64" if v.dtype == torch.int64 else "F16", list(v.shape)) for k, v in sd.items()]
    items.sort(key=lambda t: (0 if t[1] == "I64" else 1, t[0]))
    h = {"__metadata__": {"format": "pt"}}
    off = 0
    for k, dt, shape in items:
        n = 1
        for s in shape:
            n *= s
        size = n * (8 if dt == "I64" else 2)
        h[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
        off += size
    text = json.dumps(h, separators=(",", ":"))
    header_bytes = (len(text.encode()) + 7) // 8 * 8
    return h, header_bytes, off


def check_header_rule():
    """Our header rule against safetensors' own writer on a small file with the same dtypes."""
    from safetensors.torch import save
    sd = {"b.weight": torch.zeros(3, 5, dtype=torch.float16), "a.ids": torch.zeros(1, 7, dtype=torch.int64),
          "a.bias": torch.zeros(9, dtype=torch.float16), "c": torch.zeros((), dtype=torch.float16)}
    data = save(sd, metadata={"format": "pt"})
    n = int.from_bytes(data[:8], "little")
    real = json.loads(data[8:8 + n])
    h, hb, db = header(sd)
    assert list(real) == list(h) and real == h and n == hb and len(data) == 8 + hb + db, (real, h)


def generate(out_dir):
    check_header_rule()
    base, refiner = state_dicts()
    summary = {}
    for name, sd, unused in [("base", base, ["conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                                             "conditioner.embedders.1.model.logit_scale"]),
                             ("refiner", refiner, ["conditioner.embedders.0.model.logit_scale"])]:
        h, hb, db = header(sd)
        fname = f"sdxl_{name}_1.0.json"
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, fname), "w") as f:
            f.write(json.dumps(h, indent=1) + "\n")
        parts = {}
        for k, v in sd.items():
            p = k.split(".")
            part = ".".join(p[:3]) if p[0] == "conditioner" else p[0]
            e = parts.setdefault(part, {"tensors": 0, "params": 0})
            e["tensors"] += 1
            e["params"] += v.numel()
        summary[name] = {"file": fname, "tensors": len(sd), "header_bytes": hb, "data_bytes": db, "file_bytes": 8 + hb + db,
                         "dtypes": sorted({x["dtype"] for k, x in h.items() if k != "__metadata__"}),
                         "parts": dict(sorted(parts.items())), "unused_keys": unused}
    summary["notes"] = {
        "order": "I64 tensors first, then F16, each sorted by name (the safetensors writer's order); offsets are contiguous from 0",
        "header_bytes": "compact JSON (separators ',' ':') padded with spaces to a multiple of 8",
        "architecture": "base UNet 320/640/1280, depth 0/2/10, mid 10, head dim 64, context 2048, y 2816; refiner 384/768/1536/1536, depth 0/4/4/0, mid 4, context 1280, y 2560",
        "built_with": "diffusers/transformers models on torch's meta device, renamed with refgen.models' mapping",
    }
    save_json(os.path.join(out_dir, "layouts_summary.json"), summary)
