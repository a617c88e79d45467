"""Fooocus semantics (behaviour of lllyasviel/Fooocus 59f183ab, written from its description):
the anisotropic sharpness filter, long-prompt chunking, and the base+refiner run with the full
per-call model function (ADM switch, sharpness, CFG mimicking, joint refiner swap)."""
import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from . import config as C
from . import engine
from .engine import KD, Replay, make_y, t_of_sigma, unet_eps, vae_decode
from .tokenizer import BOS, EOS
from .util import rel, save_tensors, write_png

KERNEL, SIGMA_SPACE, SIGMA_COLOR = 13, 3.0, 3.0


# ----------------------------------------------------------------------------- sharpness filter

def anisotropic(eps, guide, ksize=KERNEL, s_space=SIGMA_SPACE, s_color=SIGMA_COLOR):
    r = ksize // 2
    _, _, H, W = eps.shape
    mean = guide.mean(dim=(1, 2, 3), keepdim=True)
    std = guide.std(dim=(1, 2, 3), keepdim=True, unbiased=True)
    g = (guide - mean) / (std + 1e-5)
    ep = F.pad(eps, (r, r, r, r), mode="reflect")
    gp = F.pad(g, (r, r, r, r), mode="reflect")
    o = torch.arange(-r, r + 1, dtype=eps.dtype)
    k = torch.exp(-(o * o) / (2 * s_space * s_space))
    k = k / k.sum()
    num = torch.zeros_like(eps)
    den = torch.zeros_like(eps[:, :1])
    for iy in range(ksize):
        for ix in range(ksize):
            gs = gp[:, :, iy:iy + H, ix:ix + W]
            d = (gs - g).abs().sum(dim=1, keepdim=True)
            wgt = k[iy] * k[ix] * torch.exp(-0.5 * d * d / (s_color * s_color))
            num = num + wgt * ep[:, :, iy:iy + H, ix:ix + W]
            den = den + wgt
    return num / den


def anisotropic_naive(eps, guide, ksize=KERNEL, s_space=SIGMA_SPACE, s_color=SIGMA_COLOR):
    """Per-pixel float64 loop with explicit mirror indexing (an independent check)."""
    e = eps.double().numpy()
    gd = guide.double().numpy()
    B, Cc, H, W = e.shape
    r = ksize // 2
    k = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * s_space ** 2))
    k /= k.sum()

    def mirror(i, n):
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    out = np.zeros_like(e)
    for b in range(B):
        g = (gd[b] - gd[b].mean()) / (gd[b].std(ddof=1) + 1e-5)
        for y in range(H):
            for x in range(W):
                acc = np.zeros(Cc)
                wsum = 0.0
                for dy in range(-r, r + 1):
                    yy = mirror(y + dy, H)
                    for dx in range(-r, r + 1):
                        xx = mirror(x + dx, W)
                        dist = np.abs(g[:, yy, xx] - g[:, y, x]).sum()
                        wgt = k[dy + r] * k[dx + r] * math.exp(-0.5 * dist * dist / s_color ** 2)
                        acc += wgt * e[b, :, yy, xx]
                        wsum += wgt
                out[b, :, y, x] = acc / wsum
    return torch.from_numpy(out)


def sharpness_cases(out_dir):
    g = torch.Generator().manual_seed(C.FOOOCUS_SEED + 1)
    t, diffs = {}, []
    for i, shape in enumerate(C.SHARPNESS_SHAPES):
        B, Cc, H, W = shape
        yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
        # A guide with edges (so the colour term matters) plus noise; eps is noise.
        guide = 2.0 * torch.sign(torch.sin(0.7 * xx + 0.4 * yy + i)) + torch.randn(shape, generator=g) * 0.7
        guide = guide * (1.0 + 0.5 * torch.arange(Cc, dtype=torch.float32).reshape(1, Cc, 1, 1))
        eps = torch.randn(shape, generator=g) * 1.5 + 0.3
        out = anisotropic(eps, guide)
        diffs.append(rel(out, anisotropic_naive(eps, guide)))
        t[f"case{i}.eps"], t[f"case{i}.guide"], t[f"case{i}.out"] = eps, guide, out
    assert max(diffs) < 1e-5, diffs
    save_tensors(f"{out_dir}/sharpness.safetensors", t, {"call": "adaptive_anisotropic_filter(x=eps, g=guide)",
                                                         "shapes": json.dumps(C.SHARPNESS_SHAPES)})
    return diffs


# ----------------------------------------------------------------------------- prompt chunks

def chunk_prompt(tok, text):
    words = [w for w in text.replace("\n", " ").split(" ") if w]
    chunks, cur = [], []
    for word in words:
        t = tok.word(word)
        while t:
            if len(cur) + len(t) > 75:
                if len(t) >= 8:
                    room = 75 - len(cur)
                    cur, t = cur + t[:room], t[room:]
                chunks.append(cur)
                cur = []
            else:
                cur, t = cur + t, []
    chunks.append(cur)
    return words, chunks


def chunk_ids(chunks, pad):
    return torch.tensor([[BOS] + c + [EOS] + [pad] * (75 - len(c)) for c in chunks], dtype=torch.int64)


def prompt_chunks(models, tok, out_dir):
    t, info = {}, {}
    for p, text in C.CHUNK_PROMPTS.items():
        words, chunks = chunk_prompt(tok, text)
        il, ig = chunk_ids(chunks, EOS), chunk_ids(chunks, 0)
        l, g, context, pooled = engine.encode(models, il, ig)
        t[f"{p}.ids_clip_l"], t[f"{p}.ids_clip_g"] = il, ig
        t[f"{p}.clip_l_penultimate"], t[f"{p}.clip_g_penultimate"] = l["penultimate"], g["penultimate"]
        t[f"{p}.context"] = context.reshape(1, -1, context.shape[-1])
        t[f"{p}.pooled"] = pooled[:1]
        if len(chunks) == 1:
            assert il.tolist() == tok.batch([text])[0].tolist()
        info[p] = {"prompt": text, "words": words, "tokens": sum(len(c) for c in chunks),
                   "chunk_token_counts": [len(c) for c in chunks], "chunk1_pads": 75 - len(chunks[0])}
    save_tensors(f"{out_dir}/prompt_chunks.safetensors", t)
    return {
        "rule": "split on spaces (newlines -> spaces, empty words dropped); tokenize each word alone without BOS/EOS; pack into chunks of BOS + up to 75 + EOS; a word that does not fit closes the chunk, except a word of >= 8 tokens, which is split to fill the chunk first; EOS then padding (CLIP-L 49407, CLIP-G 0)",
        "prompts": info,
        "keys": "<p>.ids_clip_l / <p>.ids_clip_g int64 [chunks,77]; <p>.clip_l_penultimate, <p>.clip_g_penultimate [chunks,77,C] (each chunk encoded alone); <p>.context [1,77*chunks,Cl+Cg]; <p>.pooled [1,P] (chunk 0)",
    }


# ----------------------------------------------------------------------------- model function

def round64(v):
    return int(round(v / 64.0)) * 64  # Python's round is half-to-even


def guidance(x, sigma, t, x0_c, x0_u, s):
    """Fooocus' guided x0 from the two x0 predictions; returns every intermediate."""
    e_c, e_u = x - x0_c, x - x0_u
    p = (1.0 - torch.tensor([t], dtype=torch.float32) / 999.0)
    alpha = 0.001 * s["sharpness"] * p
    filtered = anisotropic(e_c, x0_c)
    e_c2 = alpha * filtered + (1.0 - alpha) * e_c
    e_real = e_u + s["cfg"] * (e_c2 - e_u)
    if s["cfg"] > s["adaptive_cfg"]:
        e_mim = e_u + s["adaptive_cfg"] * (e_c2 - e_u)
        e_final = p * e_real + (1.0 - p) * e_mim
    else:
        e_final = e_real
    return {"progress": p, "alpha": alpha, "eps_cond": e_c, "eps_uncond": e_u, "eps_cond_filtered": filtered,
            "eps_final": e_final, "denoised": x - e_final}


class FooocusDenoiser:
    def __init__(self, base, refiner, s, switch, logsig, record):
        self.base, self.refiner, self.s, self.switch, self.logsig, self.record = base, refiner, s, switch, logsig, record
        self.calls = 0

    def __call__(self, x, sigma, **_):
        i = self.calls
        self.calls += 1
        sg = float(sigma.reshape(-1)[0])
        t = t_of_sigma(sg, self.logsig)
        x_in = x / math.sqrt(sg * sg + 1.0)
        xx = torch.cat([x_in, x_in])
        if i <= self.switch:
            b = self.base
            emph = t > 999.0 * (1.0 - self.s["adm_end"])
            ids = b["time_ids_emphasized"] if emph else b["time_ids_consistent"]
            y = b["y_emphasized"] if emph else b["y_consistent"]
            eps = unet_eps(b["unet"], xx, float(t), b["context"], b["pooled"], ids, y)
            model, flag = 0, int(emph)
        else:
            r = self.refiner
            ids = r["time_ids"]
            eps = unet_eps(r["unet"], xx, float(t), r["context"], r["pooled"], ids, r["y"])
            model, flag = 1, -1
        x0 = torch.cat([x, x]) - eps * sg
        out = guidance(x, sg, t, x0[:1], x0[1:], self.s)
        rec = {"model": torch.tensor([model]), "adm_emphasized": torch.tensor([flag]),
               "t": torch.tensor([float(t)]), "sigma": torch.tensor([sg], dtype=torch.float32),
               "x": x.clone(), "x0_cond": x0[:1], "x0_uncond": x0[1:],
               "time_ids_cond": ids[:1], "time_ids_uncond": ids[1:]}
        rec.update(out)
        self.record.append(rec)
        return out["denoised"]


def sample(base, refiner, s, switch, logsig, x_init, sigmas, sde_noise):
    """dpmpp_2m_sde (eta 1, midpoint) over Fooocus' model function from x_init, the SDE noise
    replayed; returns the final latent, every call's record and the replay (its arguments)."""
    record = []
    den = FooocusDenoiser(base, refiner, s, switch, logsig, record)
    rep = Replay(sde_noise)
    final = KD.sample_dpmpp_2m_sde(den, x_init.clone(), sigmas, disable=True, eta=1.0, s_noise=1.0,
                                    noise_sampler=rep, solver_type="midpoint")
    steps = len(sigmas) - 1
    assert rep.i == steps - 1 and len(record) == steps
    return final, record, rep


def stages(models, context, pooled, H, W, s):
    """The base (emphasized and consistent ADM) and refiner conditioning of an H x W image, from
    the [cond, uncond] context and pooled rows."""
    D = C.BASE_UNET["time_id_embed_dim"]
    ec = [int(H * s["adm_positive"]), int(W * s["adm_positive"]), 0, 0, round64(H), round64(W)]
    eu = [int(H * s["adm_negative"]), int(W * s["adm_negative"]), 0, 0, round64(H), round64(W)]
    cons = [round64(H), round64(W), 0, 0, round64(H), round64(W)]
    tie = torch.tensor([ec, eu], dtype=torch.float32)
    tic = torch.tensor([cons, cons], dtype=torch.float32)
    base = {"unet": models.base_unet, "context": context, "pooled": pooled, "time_ids_emphasized": tie,
            "time_ids_consistent": tic, "y_emphasized": make_y(pooled, tie, D), "y_consistent": make_y(pooled, tic, D)}
    cg = C.CLIP_G["hidden_size"]
    h, w = H // 8, W // 8
    rti = torch.tensor([[h * 8, w * 8, 0, 0, 6.0], [h * 8, w * 8, 0, 0, 2.5]], dtype=torch.float32)
    refiner = {"unet": models.refiner_unet, "context": context[..., -cg:], "pooled": pooled, "time_ids": rti,
               "y": make_y(pooled, rti, C.REFINER_UNET["time_id_embed_dim"])}
    return base, refiner, (ec, eu, cons)


def fooocus_run(models, tok, ref, out_dir):
    s = dict(C.FOOOCUS)
    steps = s["steps"]
    H, W = C.IMAGE_HW
    h, w = C.LATENT_HW
    rows = [C.POSITIVE, C.NEGATIVE]
    ids_l, ids_g = ref["ids_l"][rows], ref["ids_g"][rows]
    context, pooled = ref["context"][rows], ref["pooled"][rows]
    base, refiner, (ec, eu, cons) = stages(models, context, pooled, H, W, s)
    switch = round(steps * s["refiner_switch"])  # half to even
    sigmas = engine.karras(steps, ref["sig"])
    gen = torch.Generator().manual_seed(C.FOOOCUS_SEED)
    noise = torch.randn([1, 4, h, w], generator=gen)
    sde_noise = torch.randn([steps - 1, 1, 4, h, w], generator=gen)
    x_init = noise * torch.sqrt(1.0 + sigmas[0] ** 2)
    final, record, rep = sample(base, refiner, s, switch, ref["logsig"], x_init, sigmas, sde_noise)
    image = vae_decode(models.vae, final)
    t = {"noise": noise, "sigmas": sigmas, "x_init": x_init, "sde_noise": sde_noise,
         "sde_noise_sigmas": torch.tensor(rep.args, dtype=torch.float32), "ids_clip_l": ids_l, "ids_clip_g": ids_g,
         "final_latent": final, "image": image, "base.y_fooocus": torch.cat([base["y_emphasized"], base["y_consistent"]], -1)}
    for k in ["context", "pooled", "time_ids_emphasized", "time_ids_consistent", "y_emphasized", "y_consistent"]:
        t[f"base.{k}"] = base[k]
    for k in ["context", "pooled", "time_ids", "y"]:
        t[f"refiner.{k}"] = refiner[k]
    for i, r in enumerate(record):
        for k, v in r.items():
            t[f"step{i}.{k}"] = v
    info = dict(s, seed=C.FOOOCUS_SEED, switch=switch)
    save_tensors(f"{out_dir}/fooocus_sample.safetensors", t, {"info": json.dumps(info, sort_keys=True)})
    write_png(f"{out_dir}/fooocus_sample.png", image)

    # Visibility of the sharpness filter: guided x0 with and without it, relative to max|x0|.
    vis = []
    for r in record:
        s0 = dict(s, sharpness=0.0)
        alt = guidance(r["x"], float(r["sigma"]), float(r["t"]), r["x0_cond"], r["x0_uncond"], s0)["denoised"]
        vis.append(float((alt - r["denoised"]).abs().max() / r["denoised"].abs().max()))

    # Self check: reduced to plain CFG (no sharpness, no mimicking, fixed ADM ids = the reference
    # run's), the model function reproduces each call of reference/sample_dpmpp_2m_sde.
    run = ref["runs"]["sample_dpmpp_2m_sde"]["record"]
    cond = ref["cond"]
    plain = dict(s, sharpness=0.0, cfg=C.SAMPLING_CFG, adaptive_cfg=C.SAMPLING_CFG, adm_end=2.0)
    pb = {"unet": models.base_unet, "context": cond.context, "pooled": cond.pooled, "time_ids_emphasized": cond.time_ids,
          "time_ids_consistent": cond.time_ids, "y_emphasized": cond.y, "y_consistent": cond.y}
    chk = FooocusDenoiser(pb, None, plain, 10 ** 9, ref["logsig"], [])
    worst = 0.0
    for r in run:
        d = chk(r["x"], torch.tensor([r["_sigma"]]))
        worst = max(worst, float((d - r["denoised"]).abs().max() / r["x"].abs().max()))
    assert worst < 1e-5, worst

    return {
        "settings": s, "switch": switch,
        "switch_rule": "switch = round_half_even(steps * refiner_switch); the base evaluates calls 0..switch, the refiner switch+1..steps-1; sampler state carries over",
        "steps": steps, "height": H, "width": W, "latent_hw": [h, w],
        "positive": C.PROMPTS[C.POSITIVE], "negative": C.PROMPTS[C.NEGATIVE],
        "seed": C.FOOOCUS_SEED,
        "sampler": "k-diffusion sample_dpmpp_2m_sde, eta 1, s_noise 1, solver_type midpoint, replayed noise",
        "sigmas": sigmas.tolist(),
        "sigmas_rule": "get_sigmas_karras(steps, sigma_min=table[0], sigma_max=table[-1], rho 7) + 0",
        "x_init": "noise * sqrt(1 + sigmas[0]^2)",
        "noise": "g = torch.Generator().manual_seed(seed); noise = randn([1,4,h,w], g); sde_noise = randn([steps-1,1,4,h,w], g); sde_noise[i] is returned by the noise sampler at step i; sde_noise_sigmas[i] are its (sigma, sigma_next) arguments",
        "timesteps": [int(r["t"]) for r in record],
        "models": [int(r["model"]) for r in record],
        "adm_emphasized": [int(r["adm_emphasized"]) for r in record],
        "base_time_ids": {"emphasized_cond": ec, "emphasized_uncond": eu, "consistent": cons,
                          "order": "orig_h, orig_w, crop_top, crop_left, target_h, target_w",
                          "rule": "emphasized: (int(H s), int(W s), 0, 0, round64(H), round64(W)) with s = adm_positive (cond) / adm_negative (uncond); consistent: (round64(H), round64(W), 0, 0, round64(H), round64(W)); int truncates, round64(v) = round_half_even(v / 64) * 64"},
        "adm_switch": f"emphasized while t > 999 * (1 - adm_end) = {999.0 * (1.0 - s['adm_end']):.4f}, per call on the quantized timestep",
        "base_y_fooocus": "base.y_fooocus = [y_emphasized | y_consistent]",
        "refiner_conditioning": "context = base context[..., -Cg:], pooled = base pooled, time_ids = (8h, 8w, 0, 0, aesthetic 6.0 cond / 2.5 uncond), no ADM scaling",
        "keys": "stepI.{model, adm_emphasized (int64), t, sigma, progress, alpha, x, x0_cond, x0_uncond, eps_cond, eps_uncond (sigma-scaled: x - x0), eps_cond_filtered, eps_final, denoised, time_ids_cond, time_ids_uncond}",
        "denoiser": "t = argmin |log sigma - log_sigmas|; x_in = x / sqrt(sigma^2 + 1); eps = unet(x_in, t, context, y) (base y emphasized while t > 999 (1 - adm_end), refiner its own y); x0 = x - sigma eps; e_c, e_u = x - x0_cond, x - x0_uncond; p = 1 - t/999; alpha = 0.001 sharpness p; e_c' = alpha F(e_c; x0_cond) + (1 - alpha) e_c; e_real = e_u + cfg (e_c' - e_u); e_final = p e_real + (1 - p)(e_u + m (e_c' - e_u)) if cfg > m else e_real; return x - e_final",
        "self_check_vs_reference_sample_dpmpp_2m_sde": {"calls": len(run), "max_rel_diff": worst},
        "sharpness_visibility_per_call": vis,
        "final_latent_std": float(final.std()),
    }


def generate(models, tok, ref, out_dir, summary):
    diffs = sharpness_cases(out_dir)
    chunks = prompt_chunks(models, tok, out_dir)
    sampling = fooocus_run(models, tok, ref, out_dir)
    from .util import save_json
    save_json(f"{out_dir}/fooocus.json", {
        "seed": C.FOOOCUS_SEED,
        "filter_source": "behaviour of lllyasviel/Fooocus@59f183ab modules/anisotropic.py (own implementation)",
        "filter_vs_naive_float64_loop_max_rel_diff": diffs,
        "sharpness_filter": {
            "call": "out = adaptive_anisotropic_filter(x=eps, g=guide): g' = (g - mean) / (std_unbiased + 1e-5) per sample over (C,H,W); reflect padding by r = ksize // 2; weight = k(dy) k(dx) exp(-0.5 (sum_c |g'(p+d) - g'(p)|)^2 / sigma_color^2), k = normalised Gaussian of sigma_space; out = sum weight eps(p+d) / sum weight",
            "kernel": KERNEL, "sigma_space": SIGMA_SPACE, "sigma_color": SIGMA_COLOR,
            "padding": "reflect (no edge repeat; needs H, W >= 7)",
            "guide_norm": "(g - mean) / (std_unbiased + 1e-5) over (C, H, W) per sample",
            "files": "sharpness.safetensors: caseI.eps, caseI.guide, caseI.out (float32)",
            "shapes": C.SHARPNESS_SHAPES,
        },
        "sampling": sampling,
        "prompt_chunks": chunks,
    })
