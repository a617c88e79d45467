"""A kohya-style LoRA for the tiny base model, merged by the documented rule, with merged
weights and model outputs as references."""
import copy
import os

import torch
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file

from . import config as C
from . import engine
from .util import rel, save_json, save_tensors

U = "model.diffusion_model."
TE1 = "conditioner.embedders.0.transformer.text_model.encoder.layers."
TE2 = "conditioner.embedders.1.model.transformer.resblocks."

# (module name, rank, alpha, alpha dtype); alpha None = no alpha key.
MODULES = [
    ("lora_unet_input_blocks_7_1_transformer_blocks_1_attn1_to_q", 4, 3.0, torch.float16),
    ("lora_unet_input_blocks_5_1_transformer_blocks_0_attn1_to_v", 8, 4.0, torch.float32),
    ("lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k", 4, 8.0, torch.float16),
    ("lora_unet_output_blocks_1_1_transformer_blocks_1_attn2_to_out_0", 8, 6.0, torch.float16),
    ("lora_unet_output_blocks_4_1_transformer_blocks_0_ff_net_0_proj", 4, 4.0, torch.float32),
    ("lora_unet_input_blocks_4_1_proj_in", 8, 8.0, torch.float16),
    ("lora_unet_output_blocks_7_0_out_layers_3", 4, 2.0, torch.float16),
    ("lora_unet_input_blocks_4_0_skip_connection", 8, 16.0, torch.float32),
    ("lora_unet_label_emb_0_0", 4, 4.0, torch.float16),
    ("lora_te1_text_model_encoder_layers_1_self_attn_q_proj", 4, 2.0, torch.float16),
    ("lora_te1_text_model_encoder_layers_1_mlp_fc1", 8, 12.0, torch.float32),
    ("lora_te1_text_model_encoder_layers_0_self_attn_out_proj", 4, None, None),
    ("lora_te2_text_model_encoder_layers_1_self_attn_q_proj", 4, 3.0, torch.float16),
    ("lora_te2_text_model_encoder_layers_0_self_attn_k_proj", 8, 5.0, torch.float16),
    ("lora_te2_text_model_encoder_layers_1_self_attn_v_proj", 4, 4.0, torch.float32),
    ("lora_te2_text_model_encoder_layers_0_mlp_fc2", 8, 8.0, torch.float16),
    ("lora_te2_text_model_encoder_layers_2_self_attn_out_proj", 4, 6.0, torch.float16),
]
UNMATCHED = ("lora_unet_output_blocks_42_0_skip_connection", 4, 2.0, torch.float16)

TE1_MAP = {"self_attn_q_proj": "self_attn.q_proj", "self_attn_k_proj": "self_attn.k_proj",
           "self_attn_v_proj": "self_attn.v_proj", "self_attn_out_proj": "self_attn.out_proj",
           "mlp_fc1": "mlp.fc1", "mlp_fc2": "mlp.fc2"}
TE2_MAP = {"self_attn_out_proj": "attn.out_proj.weight", "mlp_fc1": "mlp.c_fc.weight", "mlp_fc2": "mlp.c_proj.weight"}
QKV = {"self_attn_q_proj": 0, "self_attn_k_proj": 1, "self_attn_v_proj": 2}


def target(name, sd):
    """Module name -> (single-file key, row range or None), or None when unmatched."""
    if name.startswith("lora_unet_"):
        table = {k[len(U):-len(".weight")].replace(".", "_"): k for k in sd if k.startswith(U) and k.endswith(".weight")}
        key = table.get(name[len("lora_unet_"):])
        return (key, None) if key else None
    for prefix, base in [("lora_te1_text_model_encoder_layers_", TE1), ("lora_te2_text_model_encoder_layers_", TE2)]:
        if name.startswith(prefix):
            i, m = name[len(prefix):].split("_", 1)
            if base == TE1:
                key = f"{base}{i}.{TE1_MAP[m]}.weight" if m in TE1_MAP else None
                rows = None
            elif m in QKV:
                key = f"{base}{i}.attn.in_proj_weight"
                c = C.CLIP_G["hidden_size"]
                rows = [QKV[m] * c, (QKV[m] + 1) * c]
            else:
                key, rows = (f"{base}{i}.{TE2_MAP[m]}" if m in TE2_MAP else None), None
            return (key, rows) if key in sd else None
    return None


def make_lora(sd, gen):
    lora, info = {}, {}
    for name, rank, alpha, adt in MODULES + [UNMATCHED]:
        t = target(name, sd)
        if t is None:
            shape = (64, 128, 1, 1)
        else:
            shape = tuple(sd[t[0]].shape)
            if t[1]:
                shape = (t[1][1] - t[1][0],) + shape[1:]
        out_f, in_f = shape[0], shape[1]
        if len(shape) == 4:
            kh, kw = shape[2], shape[3]
            down = torch.randn((rank, in_f, kh, kw), generator=gen) / (in_f * kh * kw) ** 0.5
            up = torch.randn((out_f, rank, 1, 1), generator=gen) * 0.6
        else:
            down = torch.randn((rank, in_f), generator=gen) / in_f ** 0.5
            up = torch.randn((out_f, rank), generator=gen) * 0.6
        lora[f"{name}.lora_down.weight"] = down.to(torch.float16)
        lora[f"{name}.lora_up.weight"] = up.to(torch.float16)
        if alpha is not None:
            lora[f"{name}.alpha"] = torch.tensor(alpha, dtype=adt)
        if t is not None:
            info[name] = {"key": t[0], "rows": t[1], "rank": rank, "alpha": alpha,
                          "alpha_dtype": None if adt is None else str(adt).replace("torch.", ""),
                          "down_shape": list(down.shape), "up_shape": list(up.shape)}
    return lora, info


def merge(sd, lora, strength):
    """Returns the merged float32 weights of every targeted key, and the unmatched keys."""
    merged, unmatched = {}, []
    names = sorted({k.split(".")[0] for k in lora})
    for name in names:
        t = target(name, sd)
        if t is None:
            unmatched += sorted(k for k in lora if k.split(".")[0] == name)
            continue
        key, rows = t
        down = lora[f"{name}.lora_down.weight"].to(torch.float32)
        up = lora[f"{name}.lora_up.weight"].to(torch.float32)
        rank = down.shape[0]
        alpha = float(lora[f"{name}.alpha"]) if f"{name}.alpha" in lora else float(rank)
        scale = torch.tensor(strength * alpha / rank, dtype=torch.float64).to(torch.float32)
        w = merged.get(key, sd[key].to(torch.float32)).clone()
        part = w if rows is None else w[rows[0]:rows[1]]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(part.shape)
        part = part + scale * delta
        if rows is None:
            w = part
        else:
            w[rows[0]:rows[1]] = part
        merged[key] = w
    return merged, unmatched


def _load(model, state):
    own = model.state_dict()
    fixed = {}
    for k, v in state.items():
        if k not in own and k.startswith("text_model.") and k[len("text_model."):] in own:
            k = k[len("text_model."):]
        fixed[k] = v
    missing = [k for k in own if k not in fixed and not k.endswith("position_ids")]
    assert not missing, missing[:5]
    model.load_state_dict(fixed, strict=False)


def load_into(models, sd):
    """Merged single-file state (float32) into copies of the diffusers/transformers models,
    through diffusers' own single-file converters."""
    m = copy.copy(models)
    m.base_unet = copy.deepcopy(models.base_unet)
    m.clip_l = copy.deepcopy(models.clip_l)
    m.clip_g = copy.deepcopy(models.clip_g)
    m.base_unet.load_state_dict(sfu.convert_ldm_unet_checkpoint(dict(sd), dict(models.base_cfg)), strict=True)
    cl = sfu.convert_ldm_clip_checkpoint(dict(sd))
    cl.pop("text_model.embeddings.position_ids", None)
    _load(m.clip_l, cl)
    _load(m.clip_g, sfu.convert_open_clip_checkpoint(models.clip_g, dict(sd), prefix="conditioner.embedders.1.model."))
    return m


def outputs(models, ids_l, ids_g, ub, context_override=None):
    rows = [C.POSITIVE, C.NEGATIVE]
    l, g, context, pooled = engine.encode(models, ids_l, ids_g)
    y = engine.make_y(pooled[rows], ub["time_ids"], C.BASE_UNET["time_id_embed_dim"])
    eps = engine.unet_eps(models.base_unet, ub["unet_input"], ub["timestep"], context[rows], pooled[rows], ub["time_ids"], y)
    return {"clip_l_penultimate": l["penultimate"], "clip_g_penultimate": g["penultimate"],
            "clip_g_last_hidden_state": g["last_hidden_state"], "text_embeds": g["text_embeds"],
            "context": context[rows], "pooled": pooled[rows], "y": y, "eps": eps, "denoised": ub["x"] - ub["sigma"] * eps}


def generate(models, tok, ref, base_sd, out_dir):
    sd32 = {k: (v if v.dtype == torch.int64 else v.to(torch.float32)) for k, v in base_sd.items()}
    lora, info = make_lora(sd32, torch.Generator().manual_seed(C.LORA_SEED))
    save_tensors(os.path.join(out_dir, "sdxl_lora_kohya.safetensors"), lora,
                 {"ss_network_module": "networks.lora", "ss_network_dim": "4/8 (per module)"})
    lora = load_file(os.path.join(out_dir, "sdxl_lora_kohya.safetensors"))
    merged, unmatched = merge(sd32, lora, C.LORA_STRENGTH)
    assert len(unmatched) == 3, unmatched
    full = dict(sd32)
    full.update(merged)
    mm = load_into(models, full)
    # The UNet's tensors after loading equal the merged weights exactly.
    ub = load_file(os.path.join(os.path.dirname(out_dir), "reference", "unet_base.safetensors"))
    ids_l, ids_g = ref["ids_l"], ref["ids_g"]
    after = outputs(mm, ids_l, ids_g, ub)
    before = outputs(models, ids_l, ids_g, ub)
    assert rel(before["eps"], ub["eps"]) == 0.0
    eps_only = engine.unet_eps(mm.base_unet, ub["unet_input"], ub["timestep"], ub["context"], ub["text_embeds"], ub["time_ids"], ub["y"])
    t = {"ids_clip_l": ids_l, "ids_clip_g": ids_g}
    for k in ["x", "sigma", "unet_input", "timestep", "time_ids"]:
        t[k] = ub[k]
    t.update(after)
    t["eps_unet_only"] = eps_only
    for k in sorted(merged):
        t[f"merged.{k}"] = merged[k]
        t[f"original.{k}"] = sd32[k]
    save_tensors(os.path.join(out_dir, "lora_reference.safetensors"), t, {"strength": repr(C.LORA_STRENGTH)})
    effect = {k: rel(after[k], before[k]) for k in after}
    effect["eps_unet_only"] = rel(eps_only, ub["eps"])
    save_json(os.path.join(out_dir, "lora.json"), {
        "seed": C.LORA_SEED,
        "strength": C.LORA_STRENGTH,
        "lora_file": "sdxl_lora_kohya.safetensors",
        "merge": "W' = W + float32(strength * alpha / rank) * (up.flatten(1) @ down.flatten(1)).reshape(W.shape); rank = down.shape[0]; alpha = the .alpha value, or rank when absent; the scale in float64, applied in float32 to the fp16 weights upcast to float32",
        "modules": info,
        "unmatched_keys": unmatched,
        "unmatched_rule": "keys of modules that match no weight are reported and skipped; Fooocus skips a LoRA for a model only when more than 12 keys stay unmatched",
        "name_mapping": {
            "unet": "lora_unet_ + (single-file key without 'model.diffusion_model.' and '.weight', '.' -> '_'); linear and conv weights alike; look names up in a table built from the checkpoint's keys",
            "te1": "lora_te1_text_model_encoder_layers_<i>_<m> -> conditioner.embedders.0.transformer.text_model.encoder.layers.<i>.<M>.weight, self_attn_{q,k,v,out}_proj -> self_attn.{q,k,v,out}_proj, mlp_fc1/mlp_fc2 -> mlp.fc1/mlp.fc2",
            "te2": "lora_te2_text_model_encoder_layers_<i>_<m> -> conditioner.embedders.1.model.transformer.resblocks.<i>.<K>: self_attn_q/k/v_proj -> attn.in_proj_weight rows [0,C)/[C,2C)/[2C,3C), self_attn_out_proj -> attn.out_proj.weight, mlp_fc1 -> mlp.c_fc.weight, mlp_fc2 -> mlp.c_proj.weight",
        },
        "reference_keys": "inputs: ids_clip_l, ids_clip_g [3,77]; x, sigma, unet_input, timestep, time_ids (as reference/unet_base); outputs after merging: clip_l_penultimate, clip_g_penultimate, clip_g_last_hidden_state, text_embeds [3,...]; context, pooled, y, eps, denoised [2,...] (positive and negative prompt); eps_unet_only (merged UNet, original context and y); merged.<key>, original.<key> (float32)",
        "effect_rel": effect,
        "merge_loaded_via": "merged single-file state loaded into the diffusers/transformers models through diffusers' single-file converters",
    })
