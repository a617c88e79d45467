"""Tiny random-weight SDXL parts built with diffusers/transformers, and the conversion of their
parameter names to the single-file SGM/LDM layout (our own mapping)."""
import copy
import math

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from . import config as C
from .util import fp16_exact

LOGIT_SCALE = math.log(1 / 0.07)


# ----------------------------------------------------------------------------- configs

def unet_diffusers_config(u, refiner):
    levels = len(u["channel_mult"])
    chans = [u["model_channels"] * m for m in u["channel_mult"]]
    down = ["CrossAttnDownBlock2D" if d > 0 else "DownBlock2D" for d in u["transformer_depth"]]
    up = ["CrossAttnUpBlock2D" if d > 0 else "UpBlock2D" for d in reversed(u["transformer_depth"])]
    return dict(
        sample_size=128, in_channels=4, out_channels=4,
        down_block_types=down, mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=up,
        block_out_channels=chans, layers_per_block=C.NUM_RES_BLOCKS,
        transformer_layers_per_block=[max(d, 1) for d in u["transformer_depth"]],
        attention_head_dim=[c // C.HEAD_DIM for c in chans],
        cross_attention_dim=u["context_dim"], use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=u["time_id_embed_dim"],
        projection_class_embeddings_input_dim=u["adm_in_channels"],
        flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
        upcast_attention=False,
    )


def unet_sgm_config(u):
    levels = len(u["channel_mult"])
    attn_res = [2 ** i for i in range(levels) if u["transformer_depth"][i] > 0]
    return dict(
        adm_in_channels=u["adm_in_channels"], num_classes="sequential", in_channels=4, out_channels=4,
        model_channels=u["model_channels"], channel_mult=u["channel_mult"],
        num_res_blocks=C.NUM_RES_BLOCKS, attention_resolutions=attn_res,
        num_head_channels=C.HEAD_DIM, use_linear_in_transformer=True,
        transformer_depth=u["transformer_depth"], transformer_depth_middle=u["transformer_depth_middle"],
        context_dim=u["context_dim"], time_id_embed_dim=u["time_id_embed_dim"],
    )


def vae_diffusers_config():
    v = C.VAE
    n = len(v["ch_mult"])
    return dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n, block_out_channels=[v["ch"] * m for m in v["ch_mult"]],
        layers_per_block=v["num_res_blocks"], act_fn="silu", latent_channels=4, norm_num_groups=32,
        sample_size=1024, scaling_factor=C.VAE_SCALE, force_upcast=True,
    )


def vae_sgm_config():
    v = C.VAE
    return dict(embed_dim=4, double_z=True, z_channels=4, in_channels=3, out_ch=3, ch=v["ch"],
                ch_mult=v["ch_mult"], num_res_blocks=v["num_res_blocks"], attn_resolutions=[],
                scale_factor=C.VAE_SCALE)


# ----------------------------------------------------------------------------- building

def _randomize(module, gen):
    """Norm affines 1 + 0.2 N / 0.2 N, embeddings N(0, 0.5^2), weights N(0, 1/fan_in), biases
    0.1 N; every value rounded to fp16."""
    for name, mod in module.named_modules():
        direct = dict(mod.named_parameters(recurse=False))
        if not direct:
            continue
        kind = type(mod).__name__
        for pname, p in sorted(direct.items()):
            shape = p.shape
            if kind in ("LayerNorm", "GroupNorm"):
                v = (1.0 + 0.2 * torch.randn(shape, generator=gen)) if pname == "weight" else 0.2 * torch.randn(shape, generator=gen)
            elif kind == "Embedding":
                v = 0.5 * torch.randn(shape, generator=gen)
            elif pname == "bias" or p.dim() == 1:
                v = 0.1 * torch.randn(shape, generator=gen)
            elif p.dim() == 0:
                v = torch.tensor(LOGIT_SCALE)
            else:
                fan_in = p[0].numel()
                v = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
            p.data.copy_(fp16_exact(v))
    for name, p in module.named_parameters():
        assert torch.equal(p.data, fp16_exact(p.data)), name


def build_unet(u, refiner, seed):
    cfg = unet_diffusers_config(u, refiner)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg)
    if u["transformer_depth_middle"] != max(u["transformer_depth"][-1], 1) or u["transformer_depth"][-1] == 0:
        # diffusers ties the middle depth to the last level: build the middle block separately.
        tmp = copy.deepcopy(cfg)
        tmp["transformer_layers_per_block"] = tmp["transformer_layers_per_block"][:-1] + [u["transformer_depth_middle"]]
        unet.mid_block = UNet2DConditionModel(**tmp).mid_block
    unet.eval()
    _randomize(unet, torch.Generator().manual_seed(seed))
    return unet, cfg


def build_clip(cfg_dict, with_projection, seed):
    cfg = CLIPTextConfig(**cfg_dict)
    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    model = cls._from_config(cfg, attn_implementation="eager").eval()
    _randomize(model, torch.Generator().manual_seed(seed))
    return model


def build_vae(seed):
    cfg = vae_diffusers_config()
    torch.manual_seed(seed)
    vae = AutoencoderKL(**cfg).eval()
    _randomize(vae, torch.Generator().manual_seed(seed))
    return vae, cfg


class TinySDXL:
    def __init__(self, seed=C.SEED):
        self.clip_l = build_clip(C.CLIP_L, False, seed + 1)
        self.clip_g = build_clip(C.CLIP_G, True, seed + 2)
        self.base_unet, self.base_cfg = build_unet(C.BASE_UNET, False, seed + 3)
        self.refiner_unet, self.refiner_cfg = build_unet(C.REFINER_UNET, True, seed + 4)
        self.vae, self.vae_cfg = build_vae(seed + 5)


# ----------------------------------------------------------------------------- name conversion

def _resnet_unet(rest):
    table = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
             "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    head, tail = rest.split(".", 1)
    return table[head] + "." + tail


def unet_to_sgm(sd, u):
    """diffusers UNet2DConditionModel state dict -> `model.diffusion_model.*` names."""
    nrb = C.NUM_RES_BLOCKS
    levels = len(u["channel_mult"])
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[0] == "time_embedding":
            n = {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[p[1]] + "." + p[2]
        elif p[0] == "add_embedding":
            n = {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"}[p[1]] + "." + p[2]
        elif p[0] == "conv_in":
            n = "input_blocks.0.0." + p[1]
        elif p[0] == "conv_norm_out":
            n = "out.0." + p[1]
        elif p[0] == "conv_out":
            n = "out.2." + p[1]
        elif p[0] == "down_blocks":
            i, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "resnets":
                n = f"input_blocks.{1 + i * (nrb + 1) + j}.0." + _resnet_unet(rest)
            elif kind == "attentions":
                n = f"input_blocks.{1 + i * (nrb + 1) + j}.1." + rest
            else:  # downsamplers.0.conv
                n = f"input_blocks.{1 + i * (nrb + 1) + nrb}.0.op." + rest.split(".", 1)[1]
        elif p[0] == "up_blocks":
            i, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            level = levels - 1 - i
            has_attn = u["transformer_depth"][level] > 0
            if kind == "resnets":
                n = f"output_blocks.{i * (nrb + 1) + j}.0." + _resnet_unet(rest)
            elif kind == "attentions":
                n = f"output_blocks.{i * (nrb + 1) + j}.1." + rest
            else:  # upsamplers.0.conv
                n = f"output_blocks.{i * (nrb + 1) + nrb}.{2 if has_attn else 1}.conv." + rest.split(".", 1)[1]
        elif p[0] == "mid_block":
            kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
            if kind == "resnets":
                n = f"middle_block.{0 if j == 0 else 2}." + _resnet_unet(rest)
            else:
                n = "middle_block.1." + rest
        else:
            raise KeyError(k)
        out["model.diffusion_model." + n] = v
    return out


def vae_to_ldm(sd):
    levels = len(C.VAE["ch_mult"])
    res = {"conv_shortcut": "nin_shortcut"}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        part = p[0]
        if part in ("quant_conv", "post_quant_conv"):
            n = k
        elif p[1] in ("conv_in", "conv_out"):
            n = k
        elif p[1] == "conv_norm_out":
            n = f"{part}.norm_out.{p[2]}"
        elif p[1] == "mid_block":
            kind, j = p[2], int(p[3])
            if kind == "resnets":
                n = f"{part}.mid.block_{j + 1}." + res.get(p[4], p[4]) + "." + p[5]
            else:
                if p[4] == "to_out":
                    n = f"{part}.mid.attn_1.proj_out.{p[6]}"
                else:
                    n = f"{part}.mid.attn_1.{attn[p[4]]}.{p[5]}"
                if v.dim() == 2:
                    v = v[:, :, None, None]
        elif p[1] in ("down_blocks", "up_blocks"):
            i = int(p[2])
            group = "down" if p[1] == "down_blocks" else "up"
            level = i if group == "down" else levels - 1 - i
            if p[3] == "resnets":
                n = f"{part}.{group}.{level}.block.{p[4]}." + res.get(p[5], p[5]) + "." + p[6]
            else:
                s = "downsample" if group == "down" else "upsample"
                n = f"{part}.{group}.{level}.{s}.conv.{p[-1]}"
        else:
            raise KeyError(k)
        out["first_stage_model." + n] = v
    return out


def hf_text_names(model):
    """The CLIP-L state dict with HF's `text_model.` names (transformers 5 drops that prefix
    from CLIPTextModel's own state dict)."""
    return {(k if k.startswith("text_model.") else "text_model." + k): v for k, v in model.state_dict().items()
            if not k.endswith("position_ids")}


def clip_l_to_sgm(model):
    out = {"conditioner.embedders.0.transformer." + k: v for k, v in hf_text_names(model).items()}
    out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    return out


def clip_g_to_openclip(model, prefix):
    sd = model.state_dict()
    hidden = model.config.hidden_size
    out = {}
    t = "text_model."
    out["token_embedding.weight"] = sd[t + "embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[t + "embeddings.position_embedding.weight"]
    for i in range(model.config.num_hidden_layers):
        a = f"{t}encoder.layers.{i}."
        b = f"transformer.resblocks.{i}."
        out[b + "attn.in_proj_weight"] = torch.cat([sd[a + f"self_attn.{x}_proj.weight"] for x in "qkv"], 0)
        out[b + "attn.in_proj_bias"] = torch.cat([sd[a + f"self_attn.{x}_proj.bias"] for x in "qkv"], 0)
        for src, dst in [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]:
            out[b + dst + ".weight"] = sd[a + src + ".weight"]
            out[b + dst + ".bias"] = sd[a + src + ".bias"]
    out["ln_final.weight"] = sd[t + "final_layer_norm.weight"]
    out["ln_final.bias"] = sd[t + "final_layer_norm.bias"]
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out["logit_scale"] = fp16_exact(torch.tensor(LOGIT_SCALE))
    assert out["in_proj_weight" if False else "transformer.resblocks.0.attn.in_proj_weight"].shape[0] == 3 * hidden
    return {prefix + k: v for k, v in out.items()}


def to_file_dtype(sd):
    return {k: (v if v.dtype == torch.int64 else v.to(torch.float16)).contiguous() for k, v in sd.items()}


def base_single_file(m):
    sd = {}
    sd.update(unet_to_sgm(m.base_unet.state_dict(), C.BASE_UNET))
    sd.update(vae_to_ldm(m.vae.state_dict()))
    sd.update(clip_l_to_sgm(m.clip_l))
    sd.update(clip_g_to_openclip(m.clip_g, "conditioner.embedders.1.model."))
    return to_file_dtype(sd)


def refiner_single_file(m):
    sd = {}
    sd.update(unet_to_sgm(m.refiner_unet.state_dict(), C.REFINER_UNET))
    sd.update(vae_to_ldm(m.vae.state_dict()))
    sd.update(clip_g_to_openclip(m.clip_g, "conditioner.embedders.0.model."))
    return to_file_dtype(sd)


def tiny_configs():
    def clip_cfg(d):
        return dict(d)
    return {
        "seed": C.SEED,
        "dtype_on_disk": "float16 (every value exactly representable; references computed in float32)",
        "clip_l": clip_cfg(C.CLIP_L),
        "clip_g": clip_cfg(C.CLIP_G),
        "base_unet_diffusers": unet_diffusers_config(C.BASE_UNET, False),
        "base_unet_sgm": unet_sgm_config(C.BASE_UNET),
        "refiner_unet_diffusers": unet_diffusers_config(C.REFINER_UNET, True),
        "refiner_unet_sgm": unet_sgm_config(C.REFINER_UNET),
        "vae_diffusers": vae_diffusers_config(),
        "vae_sgm": vae_sgm_config(),
        "notes": {
            "attention_head_dim": f"diffusers' attention_head_dim lists are head COUNTS per level (SDXL quirk); the head width is {C.HEAD_DIM} everywhere (SGM num_head_channels)",
            "transformer_layers_per_block": "diffusers lists 1 for levels without attention (ignored by DownBlock2D/UpBlock2D); the SGM transformer_depth is authoritative",
            "middle_block": "transformer_depth_middle is independent of the last level's depth; the diffusers model's middle block was built with that depth",
            "base_context": f"cat(CLIP-L hidden_states[-2], CLIP-G hidden_states[-2]) -> {C.BASE_UNET['context_dim']}",
            "base_y": f"cat(pooled ({C.CLIP_G['projection_dim']}), 6 time ids x {C.BASE_UNET['time_id_embed_dim']}-wide [cos|sin] sinusoids) -> {C.BASE_UNET['adm_in_channels']}",
            "refiner_y": f"cat(pooled ({C.CLIP_G['projection_dim']}), 5 time ids x {C.REFINER_UNET['time_id_embed_dim']}-wide sinusoids) -> {C.REFINER_UNET['adm_in_channels']}",
            "clip_l_layers": f"CLIP-L has {C.CLIP_L['num_hidden_layers']} layers: its penultimate state is the output of layer {C.CLIP_L['num_hidden_layers'] - 2}",
            "refiner_shares": "the refiner's CLIP-G and VAE weights are the base's",
            "vae_scaling_factor": C.VAE_SCALE,
        },
    }
