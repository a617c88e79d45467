"""The samplers folder: every schedule and every k-diffusion sampler on an analytic Gaussian
denoiser (no network), with replayed noise."""
import math
import os

import torch

from . import config as C
from .engine import discrete_table
from .util import load_kdiffusion_sampling, save_json, save_tensors, versions

KD = load_kdiffusion_sampling()

SCHEDULES = ["karras", "exponential", "polyexponential", "normal", "simple", "sgm_uniform", "ddim_uniform"]
SAMPLERS = {
    "euler": ("sample_euler", {}, False),
    "euler_ancestral": ("sample_euler_ancestral", {"eta": 1.0, "s_noise": 1.0}, True),
    "heun": ("sample_heun", {}, False),
    "dpm_2": ("sample_dpm_2", {}, False),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {"eta": 1.0, "s_noise": 1.0}, True),
    "lms": ("sample_lms", {"order": 4}, False),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {"eta": 1.0, "s_noise": 1.0}, True),
    "dpmpp_sde": ("sample_dpmpp_sde", {"eta": 1.0, "s_noise": 1.0, "r": 0.5}, True),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, False),
    "dpmpp_2m_sde_midpoint": ("sample_dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, "solver_type": "midpoint"}, True),
    "dpmpp_2m_sde_heun": ("sample_dpmpp_2m_sde", {"eta": 1.0, "s_noise": 1.0, "solver_type": "heun"}, True),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {"eta": 1.0, "s_noise": 1.0}, True),
}
ONE_STEP_FOOOCUS = {"sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"}
MU_TEXT = "mu[0,c,y,x] = 0.6 cos(0.5 x - 0.7 c) sin(0.4 y + 0.3 c) - 0.1 (c - 1.5)"


def make_mu(shape):
    _, ch, H, W = shape
    c = torch.arange(ch, dtype=torch.float64).reshape(1, ch, 1, 1)
    y = torch.arange(H, dtype=torch.float64).reshape(1, 1, H, 1)
    x = torch.arange(W, dtype=torch.float64).reshape(1, 1, 1, W)
    return (0.6 * torch.cos(0.5 * x - 0.7 * c) * torch.sin(0.4 * y + 0.3 * c) - 0.1 * (c - 1.5)).to(torch.float32)


# ----------------------------------------------------------------------------- schedules

def t_of_sigma(sigma, log_sigmas):
    return int((math.log(float(sigma)) - log_sigmas.to(torch.float64)).abs().argmin())


def sigma_of_t(t, log_sigmas):
    t = t.to(torch.float32)
    lo = t.floor().long()
    hi = t.ceil().long()
    w = t - t.floor()
    return ((1 - w) * log_sigmas[lo] + w * log_sigmas[hi]).exp()


def schedule(name, n, sig, logsig, smin, smax):
    N = sig.shape[0]
    zero = torch.zeros(1)
    if name == "karras":
        return KD.get_sigmas_karras(n, smin, smax, rho=7.0)
    if name == "exponential":
        return KD.get_sigmas_exponential(n, smin, smax)
    if name == "polyexponential":
        return KD.get_sigmas_polyexponential(n, smin, smax, rho=1.0)
    if name in ("normal", "sgm_uniform"):
        t0, t1 = t_of_sigma(smax, logsig), t_of_sigma(smin, logsig)
        if name == "normal":
            ts = torch.linspace(t0, t1, n, dtype=torch.float32)
        else:
            ts = torch.linspace(t0, t1, n + 1, dtype=torch.float32)[:-1]
        return torch.cat([sigma_of_t(ts, logsig), zero])
    if name == "simple":
        step = N / n
        return torch.cat([torch.stack([sig[N - 1 - int(i * step)] for i in range(n)]), zero])
    if name == "ddim_uniform":
        step = max(N // n, 1)
        idx = list(range(1, N, step))[::-1]
        return torch.cat([sig[idx], zero])
    raise KeyError(name)


def schedule64(name, n, sig, logsig, smin, smax):
    """float64 evaluations of the continuous definitions (for the recorded agreement figure)."""
    if name == "karras":
        r = torch.linspace(0, 1, n, dtype=torch.float64)
        a, b = smax ** (1 / 7), smin ** (1 / 7)
        return (a + r * (b - a)) ** 7
    if name == "exponential":
        return torch.linspace(math.log(smax), math.log(smin), n, dtype=torch.float64).exp()
    if name == "polyexponential":
        r = torch.linspace(1, 0, n, dtype=torch.float64)
        return (r * (math.log(smax) - math.log(smin)) + math.log(smin)).exp()
    return None


# ----------------------------------------------------------------------------- runs

class Denoiser:
    def __init__(self, mu, s, dtype):
        self.mu = mu.to(dtype)
        self.s2 = torch.tensor(s * s, dtype=torch.float32).to(dtype) if dtype == torch.float32 else torch.tensor(s * s, dtype=dtype)
        self.calls = []

    def __call__(self, x, sigma, **_):
        sg = sigma.reshape(-1)[0].to(x.dtype)
        self.calls.append(float(sg))
        return (x * self.s2 + self.mu * sg * sg) / (self.s2 + sg * sg)


class Replay:
    def __init__(self, stack):
        self.stack, self.i, self.args = stack, 0, []

    def __call__(self, sigma, sigma_next):
        n = self.stack[self.i]
        self.i += 1
        self.args.append([float(sigma), float(sigma_next)])
        return n


def run(name, sigmas, z, mu, s, stack, dtype):
    fn, kwargs, stochastic = SAMPLERS[name]
    sigmas = sigmas.to(dtype)
    x = (z.to(dtype) * sigmas[0])
    model = Denoiser(mu, s, dtype)
    xs = []
    rep = Replay(stack.to(dtype))
    if fn in ONE_STEP_FOOOCUS and len(sigmas) == 2:
        # Fooocus' copies return the denoised value when the only step ends at 0.
        final = model(x, sigmas[0] * x.new_ones([x.shape[0]]))
        xs = [final]
    else:
        def cb(d):
            if d["i"] > 0:
                xs.append(d["x"].clone())

        kw = dict(kwargs)
        if stochastic:
            kw["noise_sampler"] = rep
        final = getattr(KD, fn)(model, x.clone(), sigmas, disable=True, callback=cb, **kw)
        xs.append(final.clone())
    assert len(xs) == len(sigmas) - 1
    return {"x_init": x, "xs": torch.cat(xs), "final": final, "calls": model.calls, "noise": rep.i, "noise_args": rep.args}


def generate(out_dir):
    tb = C.SAMPLER_TABLE
    sig, logsig = discrete_table(tb["beta_start"], tb["beta_end"], tb["n"])
    smin, smax = float(sig[0]), float(sig[-1])
    shape = C.SAMPLER_SHAPE
    mu = make_mu(shape)
    g = torch.Generator().manual_seed(C.SAMPLER_SEED)
    z = torch.randn(shape, generator=g)
    stack = torch.randn([2 * (max(C.SAMPLER_STEPS) + 2)] + shape, generator=g)
    s = C.SAMPLER_S

    sch, diffs, simple_diff = {"table.sigmas": sig, "table.log_sigmas": logsig}, [], {}
    for n in C.SAMPLER_STEPS:
        simple_diff[str(n)] = [i for i in range(n) if int(i * (tb["n"] / n)) != (i * tb["n"]) // n]
        for name in SCHEDULES:
            v = schedule(name, n, sig, logsig, smin, smax).to(torch.float32)
            sch[f"{name}.n{n}"] = v
            d2 = schedule(name, n + 1, sig, logsig, smin, smax).to(torch.float32)
            sch[f"{name}.n{n}.dpm2"] = torch.cat([d2[:-2], d2[-1:]])
            ref64 = schedule64(name, n, sig, logsig, smin, smax)
            if ref64 is not None:
                diffs.append(float(((v[:-1].double() - ref64).abs() / ref64).max()))
    save_tensors(os.path.join(out_dir, "schedules.safetensors"), sch)

    floors, exact, one_step = {}, {}, []
    for name, (fn, kwargs, stochastic) in SAMPLERS.items():
        t = {"mu": mu, "z": z}
        worst = 0.0
        for sname in SCHEDULES:
            for n in C.SAMPLER_STEPS:
                sigmas = sch[f"{sname}.n{n}"]
                r = run(name, sigmas, z, mu, s, stack, torch.float32)
                r64 = run(name, sigmas, z, mu, s, stack, torch.float64)
                scale = max(float(r["x_init"].abs().max()), float(r["xs"].abs().max()))
                worst = max(worst, float((r64["xs"] - r["xs"].double()).abs().max()) / scale)
                p = f"{sname}.n{n}."
                t[p + "sigmas"] = sigmas
                t[p + "x_init"] = r["x_init"]
                t[p + "xs"] = r["xs"]
                t[p + "final"] = r["final"]
                t[p + "call_sigmas"] = torch.tensor(r["calls"], dtype=torch.float32)
                t[p + "noise_count"] = torch.tensor([r["noise"]], dtype=torch.int64)
                if r["noise"] > 0:
                    t[p + "noise"] = stack[: r["noise"]]
                    t[p + "noise_sigmas"] = torch.tensor(r["noise_args"], dtype=torch.float32)
                if fn in ONE_STEP_FOOOCUS and len(sigmas) == 2:
                    one_step.append(f"{name}:{sname}.n{n}")
                if not stochastic and n == max(C.SAMPLER_STEPS):
                    s0 = float(sigmas[0])
                    xe = mu.double() + (r["x_init"].double() - mu.double()) * s / math.sqrt(s * s + s0 * s0)
                    exact.setdefault(name, {})[sname] = float((r["final"].double() - xe).abs().max())
        floors[name] = worst
        save_tensors(os.path.join(out_dir, f"sampler_{name}.safetensors"), t, {"k_diffusion": fn})

    save_json(os.path.join(out_dir, "samplers.json"), {
        "shape": shape,
        "s": s,
        "mu": MU_TEXT,
        "dtype": "float32 everywhere",
        "denoiser": "D(x, sigma) = (x * s2 + mu * sigma^2) / (s2 + sigma^2), s2 = float32(s*s), evaluated in float32",
        "seed": C.SAMPLER_SEED,
        "table": {"beta_start": tb["beta_start"], "beta_end": tb["beta_end"], "n": tb["n"],
                  "schedule": "scaled_linear: betas = linspace(sqrt(beta_start), sqrt(beta_end), n)^2 (float64), alphabar = cumprod(1 - betas), sigma = sqrt((1 - alphabar) / alphabar), cast to float32",
                  "sigma_min": smin, "sigma_max": smax},
        "continuous_sigma_range": [smin, smax],
        "schedules_vs_float64_definitions_max_rel_diff": max(diffs),
        "steps": C.SAMPLER_STEPS,
        "schedules": SCHEDULES,
        "schedule_keys": "schedules.safetensors: '<schedule>.n<N>' (with trailing 0; the number of steps is its length - 1, which for ddim_uniform can differ from N), '<schedule>.n<N>.dpm2' (computed for N+1 steps with the second-to-last sigma dropped), 'table.sigmas', 'table.log_sigmas'",
        "simple_float_index_differs_from_integer_index": simple_diff,
        "samplers": {k: {"k_diffusion": v[0], "kwargs": v[1], "stochastic": v[2]} for k, v in SAMPLERS.items()},
        "run_keys": "sampler_<name>.safetensors: 'mu', 'z'; per run '<schedule>.n<N>.' + 'sigmas', 'x_init' (= z * sigmas[0]), 'xs' [steps, ...] (x after step i), 'final' (= xs[-1]), 'call_sigmas' [calls], 'noise_count' int64 [1], and when noise_count > 0 'noise' [k, ...] and 'noise_sigmas' [k, 2] (the noise sampler's arguments)",
        "noise": "one seeded stack; every stochastic run takes it from index 0, so each run's noise is a prefix of the stack; deterministic samplers draw none; a step whose next sigma is 0 draws none",
        "one_step_fooocus_semantics": {
            "runs": one_step,
            "why": "k-diffusion 0.1.1.post1 sample_dpmpp_2m_sde / sample_dpmpp_3m_sde fail (UnboundLocalError) when the first step already ends at sigma 0; Fooocus' copies return x = D(x_init, sigma_0) after one call and draw no noise. These runs hold that result.",
        },
        "float32_noise_floor": {"per_sampler": floors,
                                "what": "max over all runs and steps of |xs recomputed in float64 - xs| / max(|x_init|, |xs|)"},
        "exact_ode_max_error_at_max_steps": exact,
        "exact_ode": "probability-flow ODE solution x(0) = mu + (x_init - mu) s / sqrt(s^2 + sigma0^2); a sanity figure for the deterministic samplers only",
        "versions": versions(),
    })
