"""Engine references: text encoders, conditioning, schedule, single UNet forwards, VAE and two
plain CFG sampling runs."""
import math

import torch

from . import config as C
from .util import load_kdiffusion_sampling, rel, save_tensors, write_png

KD = load_kdiffusion_sampling()


# ----------------------------------------------------------------------------- conditioning

def clip_states(model, ids):
    out = model(input_ids=ids, output_hidden_states=True)
    hs = [h.clone() for h in out.hidden_states]
    res = {"hidden_states": hs, "penultimate": hs[-2], "last_hidden_state": out.last_hidden_state}
    if hasattr(out, "text_embeds"):
        eos = ids.argmax(dim=-1)
        own = out.last_hidden_state[torch.arange(ids.shape[0]), eos] @ model.text_projection.weight.t()
        assert rel(own, out.text_embeds) < 1e-6
        res["text_embeds"] = out.text_embeds
        res["eos_position"] = eos
    return res


def sinusoid(values, dim):
    """[cos(v f_k) | sin(v f_k)], f_k = 10000^(-k/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = values.to(torch.float32)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def make_y(pooled, time_ids, dim):
    emb = sinusoid(time_ids.flatten(), dim).reshape(time_ids.shape[0], -1)
    return torch.cat([pooled, emb], dim=-1)


def encode(models, ids_l, ids_g):
    l = clip_states(models.clip_l, ids_l)
    g = clip_states(models.clip_g, ids_g)
    return l, g, torch.cat([l["penultimate"], g["penultimate"]], dim=-1), g["text_embeds"]


# ----------------------------------------------------------------------------- schedule

def discrete_table(beta_start=0.00085, beta_end=0.012, n=1000):
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)
    sigmas = (((1 - abar) / abar) ** 0.5).to(torch.float32)
    return sigmas, sigmas.log()


def t_of_sigma(sigma, log_sigmas):
    return int((math.log(float(sigma)) - log_sigmas.to(torch.float64)).abs().argmin())


def karras(steps, sigmas_table):
    return KD.get_sigmas_karras(steps, float(sigmas_table[0]), float(sigmas_table[-1]), rho=7.0)


# ----------------------------------------------------------------------------- UNet

class YCheck:
    """Captures the add_embedding input of a diffusers UNet (its internal y)."""

    def __init__(self, unet):
        self.value = None
        self.h = unet.add_embedding.register_forward_pre_hook(lambda m, a: setattr(self, "value", a[0].clone()))

    def close(self):
        self.h.remove()


def unet_eps(unet, x_in, t, context, pooled, time_ids, y=None):
    n = x_in.shape[0]
    hook = YCheck(unet)
    eps = unet(x_in, torch.full((n,), float(t)) if not torch.is_tensor(t) else t, encoder_hidden_states=context,
               added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    hook.close()
    if y is not None:
        assert rel(hook.value, y) < 1e-6, rel(hook.value, y)
    return eps


class CondSet:
    def __init__(self, unet, context, pooled, time_ids, id_dim):
        self.unet, self.context, self.pooled, self.time_ids = unet, context, pooled, time_ids
        self.y = make_y(pooled, time_ids, id_dim)


def cfg_model(cond, table_log, cfg, record):
    """k-diffusion model function: plain CFG on x0 with the quantized timestep."""

    def fn(x, sigma, **_):
        s = float(sigma.reshape(-1)[0])
        t = t_of_sigma(s, table_log)
        c_in = 1.0 / math.sqrt(s * s + 1.0)
        xx = torch.cat([x, x])
        eps = unet_eps(cond.unet, xx * c_in, float(t), cond.context, cond.pooled, cond.time_ids, cond.y)
        x0 = xx - s * eps
        den = x0[1:] + cfg * (x0[:1] - x0[1:])
        i = len(record)
        record.append({"x": x.clone(), "t": torch.tensor([float(t)]), "x0_cond": x0[:1], "x0_uncond": x0[1:], "denoised": den, "_sigma": s})
        return den

    return fn


class Replay:
    """Noise sampler that hands out stored unit normals in order and logs its arguments."""

    def __init__(self, noise):
        self.noise, self.i, self.args = noise, 0, []

    def __call__(self, sigma, sigma_next):
        n = self.noise[self.i]
        self.i += 1
        self.args.append([float(sigma), float(sigma_next)])
        return n


def vae_decode(vae, latent):
    return vae.decode(latent / C.VAE_SCALE).sample


def image_hw_time_ids(h, w, scale):
    return [int(h * scale), int(w * scale), 0, 0, h, w]


# ----------------------------------------------------------------------------- the references

def generate(models, tok, out_dir, summary):
    g = torch.Generator().manual_seed(C.SEED + 100)
    ids_l, ids_g, lengths = tok.batch(C.PROMPTS)
    save_tensors(f"{out_dir}/tokens.safetensors", {"ids_clip_l": ids_l, "ids_clip_g": ids_g, "lengths": lengths},
                 {"ids_clip_l": "pad 49407", "ids_clip_g": "pad 0 ('!')", "lengths": "BOS through the first EOS"})
    l, gg, context, pooled = encode(models, ids_l, ids_g)
    t = {"input_ids": ids_l, "penultimate": l["penultimate"], "last_hidden_state": l["last_hidden_state"]}
    t.update({f"hidden_states.{i}": h for i, h in enumerate(l["hidden_states"])})
    save_tensors(f"{out_dir}/clip_l.safetensors", t)
    t = {"input_ids": ids_g, "penultimate": gg["penultimate"], "last_hidden_state": gg["last_hidden_state"],
         "eos_position": gg["eos_position"], "text_embeds": gg["text_embeds"]}
    t.update({f"hidden_states.{i}": h for i, h in enumerate(gg["hidden_states"])})
    save_tensors(f"{out_dir}/clip_g.safetensors", t)

    sig, logsig = discrete_table()
    save_tensors(f"{out_dir}/schedule.safetensors", {"sigmas": sig, "log_sigmas": logsig},
                 {"sigmas": "scaled_linear 0.00085..0.012, 1000 entries, float64 then float32"})

    h, w = C.LATENT_HW
    rows = [C.POSITIVE, C.NEGATIVE]
    # Single forwards.
    for name, unet, ts, tids, ctx, dim in [
        ("unet_base", models.base_unet, C.BASE_TIMESTEP, C.BASE_TIME_IDS, context[rows], C.BASE_UNET["time_id_embed_dim"]),
        ("unet_refiner", models.refiner_unet, C.REFINER_TIMESTEP, C.REFINER_TIME_IDS, gg["penultimate"][rows], C.REFINER_UNET["time_id_embed_dim"]),
    ]:
        sigma = sig[int(ts)].reshape(1)
        assert t_of_sigma(float(sigma), logsig) == int(ts)
        x = (torch.randn([1, 4, h, w], generator=g) * sigma).repeat(2, 1, 1, 1)
        c_in = 1.0 / torch.sqrt(sigma * sigma + 1.0)
        time_ids = torch.tensor(tids, dtype=torch.float32)
        y = make_y(pooled[rows], time_ids, dim)
        eps = unet_eps(unet, x * c_in, float(ts), ctx, pooled[rows], time_ids, y)
        save_tensors(f"{out_dir}/{name}.safetensors", {
            "x": x, "sigma": sigma, "c_in": c_in, "unet_input": x * c_in, "timestep": torch.full((2,), float(ts)),
            "context": ctx, "text_embeds": pooled[rows], "time_ids": time_ids, "y": y, "eps": eps, "denoised": x - sigma * eps,
        }, {"rows": f"row 0 prompt {C.POSITIVE}, row 1 prompt {C.NEGATIVE}"})

    # The base UNet at a latent size its downsampling does not divide (A1111 clients ask for
    # any multiple of 8 pixels): diffusers upsamples to each skip connection's size. Its own
    # generator, so the fixtures above and below are unchanged.
    odd = torch.Generator().manual_seed(C.SEED + 31)
    ts = C.BASE_TIMESTEP
    sigma = sig[int(ts)].reshape(1)
    x = (torch.randn([1, 4, h + 1, w + 3], generator=odd) * sigma).repeat(2, 1, 1, 1)
    c_in = 1.0 / torch.sqrt(sigma * sigma + 1.0)
    time_ids = torch.tensor(C.BASE_TIME_IDS, dtype=torch.float32)
    y = make_y(pooled[rows], time_ids, C.BASE_UNET["time_id_embed_dim"])
    eps = unet_eps(models.base_unet, x * c_in, float(ts), context[rows], pooled[rows], time_ids, y)
    save_tensors(f"{out_dir}/unet_base_odd_size.safetensors", {
        "x": x, "sigma": sigma, "c_in": c_in, "unet_input": x * c_in, "timestep": torch.full((2,), float(ts)),
        "context": context[rows], "text_embeds": pooled[rows], "time_ids": time_ids, "y": y, "eps": eps,
        "denoised": x - sigma * eps,
    }, {"rows": f"row 0 prompt {C.POSITIVE}, row 1 prompt {C.NEGATIVE}", "size": "latent (h + 1, w + 3)"})

    # VAE.
    latent = torch.randn([1, 4, h, w], generator=g) * 1.2
    image = vae_decode(models.vae, latent)
    save_tensors(f"{out_dir}/vae_decode.safetensors", {"latent": latent, "decoder_input": latent / C.VAE_SCALE, "image": image})
    write_png(f"{out_dir}/vae_decode.png", image)
    H, W = C.IMAGE_HW
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    img = torch.stack([torch.sin(3.1 * xx + 1.7 * yy), torch.cos(2.3 * yy - 0.9 * xx) * 0.9, torch.tanh(2 * xx * yy)])[None]
    post = models.vae.encode(img).latent_dist
    save_tensors(f"{out_dir}/vae_encode.safetensors", {"image": img, "mean": post.mean, "logvar": post.logvar,
                                                        "latent": post.mean * C.VAE_SCALE})

    # Sampling runs.
    steps, cfg = C.SAMPLING_STEPS, C.SAMPLING_CFG
    sigmas = karras(steps, sig)
    H, W = C.IMAGE_HW
    tc = torch.tensor([image_hw_time_ids(H, W, 1.5)], dtype=torch.float32)
    tu = torch.tensor([image_hw_time_ids(H, W, 0.8)], dtype=torch.float32)
    cond = CondSet(models.base_unet, context[rows], pooled[rows], torch.cat([tc, tu]), C.BASE_UNET["time_id_embed_dim"])
    noise = torch.randn([1, 4, h, w], generator=torch.Generator().manual_seed(C.SEED + 7))
    sde_noise = torch.randn([steps, 1, 4, h, w], generator=torch.Generator().manual_seed(C.SEED + 8))
    timesteps = [float(t_of_sigma(s, logsig)) for s in sigmas[:-1]]
    runs = {}
    for name in ["sample_dpmpp_2m", "sample_dpmpp_2m_sde"]:
        record = []
        fn = cfg_model(cond, logsig, cfg, record)
        x_init = noise * sigmas[0]
        if name == "sample_dpmpp_2m":
            final = KD.sample_dpmpp_2m(fn, x_init.clone(), sigmas, disable=True)
        else:
            rep = Replay(sde_noise)
            final = KD.sample_dpmpp_2m_sde(fn, x_init.clone(), sigmas, disable=True, eta=1.0, s_noise=1.0,
                                            noise_sampler=rep, solver_type="midpoint")
            assert rep.i == steps - 1
        img = vae_decode(models.vae, final)
        t = {"noise": noise, "sigmas": sigmas, "x_init": x_init, "timesteps": torch.tensor(timesteps),
             "context_cond": cond.context[:1], "context_uncond": cond.context[1:],
             "text_embeds_cond": cond.pooled[:1], "text_embeds_uncond": cond.pooled[1:],
             "time_ids_cond": tc, "time_ids_uncond": tu, "y_cond": cond.y[:1], "y_uncond": cond.y[1:],
             "final_latent": final, "image": img}
        if name != "sample_dpmpp_2m":
            t["sde_noise"] = sde_noise
        for i, r in enumerate(record):
            for k, v in r.items():
                if not k.startswith("_"):
                    t[f"step{i}.{k}"] = v
        save_tensors(f"{out_dir}/{name}.safetensors", t, {"sampler": f"k_diffusion.sampling.{name}", "cfg": repr(cfg)})
        write_png(f"{out_dir}/{name}.png", img)
        runs[name] = {"record": record, "final": final, "final_std": float(final.std())}

    summary.update({
        "prompts": C.PROMPTS,
        "positive_prompt_index": C.POSITIVE,
        "negative_prompt_index": C.NEGATIVE,
        "latent_hw": list(C.LATENT_HW),
        "image_hw": list(C.IMAGE_HW),
        "seed": C.SEED,
        "base_unet": {"timestep": C.BASE_TIMESTEP, "time_ids": C.BASE_TIME_IDS,
                      "time_ids_order": "orig_h, orig_w, crop_top, crop_left, target_h, target_w"},
        "refiner_unet": {"timestep": C.REFINER_TIMESTEP, "time_ids": C.REFINER_TIME_IDS,
                         "time_ids_order": "orig_h, orig_w, crop_top, crop_left, aesthetic_score"},
        "sampling": {
            "sampler": "dpmpp_2m, and dpmpp_2m_sde (eta 1, s_noise 1, midpoint) with replayed noise",
            "steps": steps, "cfg": cfg, "sigma_min": float(sig[0]), "sigma_max": float(sig[-1]),
            "sigmas": sigmas.tolist(), "timesteps": timesteps,
            "time_ids_cond": tc[0].int().tolist(), "time_ids_uncond": tu[0].int().tolist(),
            "x_init": "noise * sigmas[0]",
            "denoiser": "t = argmin |log sigma - log_sigmas| (float); eps = unet(x / sqrt(sigma^2 + 1), t, context, y) for cond and uncond in one batch; x0 = x - sigma eps; out = x0_uncond + cfg (x0_cond - x0_uncond)",
            "final_latent_std": {k: v["final_std"] for k, v in runs.items()},
        },
        "png": "uint8(clip(255 * clamp((x + 1) / 2, 0, 1))) with truncation",
    })
    return {"ids_l": ids_l, "ids_g": ids_g, "context": context, "pooled": pooled, "l": l, "g": gg,
            "sig": sig, "logsig": logsig, "runs": runs, "cond": cond}
