"""Independent check of the single files: diffusers' own single-file converters turn them back
into diffusers/transformers state dicts, which must equal the models' tensors exactly."""
import torch
from diffusers.loaders import single_file_utils as sfu


def _compare(name, got, want):
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing, (name, missing[:5])
    diff = 0.0
    for k, v in want.items():
        g = got[k].to(torch.float32)
        assert g.shape == v.shape, (name, k, g.shape, v.shape)
        diff = max(diff, float((g - v.to(torch.float32)).abs().max()) if v.numel() else 0.0)
    return {"tensors": len(want), "max_abs_diff": diff, "ignored_extra": len(extra)}


def check_single_files(models, base_sd, refiner_sd):
    out = {}
    for name, sd, unet, cfg in [("base_unet", base_sd, models.base_unet, models.base_cfg),
                                ("refiner_unet", refiner_sd, models.refiner_unet, models.refiner_cfg)]:
        conv = sfu.convert_ldm_unet_checkpoint(dict(sd), dict(cfg))
        out[name] = _compare(name, conv, unet.state_dict())
    conv = sfu.convert_ldm_vae_checkpoint(dict(base_sd), dict(models.vae_cfg))
    out["vae"] = _compare("vae", conv, models.vae.state_dict())
    conv = sfu.convert_ldm_clip_checkpoint(dict(base_sd))
    from .models import hf_text_names
    want = hf_text_names(models.clip_l)
    assert all(k.startswith("conditioner.embedders.0.transformer.text_model.") for k in base_sd if k.startswith("conditioner.embedders.0."))
    out["clip_l"] = _compare("clip_l", conv, want)
    for name, sd, prefix in [("clip_g_base", base_sd, "conditioner.embedders.1.model."),
                             ("clip_g_refiner", refiner_sd, "conditioner.embedders.0.model.")]:
        conv = sfu.convert_open_clip_checkpoint(models.clip_g, dict(sd), prefix=prefix)
        want = {k: v for k, v in models.clip_g.state_dict().items() if not k.endswith("position_ids")}
        out[name] = _compare(name, conv, want)
    for k, v in out.items():
        assert v["max_abs_diff"] == 0.0, (k, v)
    return out
