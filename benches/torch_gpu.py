#!/usr/bin/env python3
"""PyTorch/diffusers side of the GPU check: the full-size SDXL 1.0 base UNet (batch 2, the CFG
pair) and refiner UNet, and the VAE decoder, random weights, on one CUDA GPU; the same shapes
`fooocus bench --device cuda` times. Prints one JSON object: median seconds per part, and the
peak GPU memory PyTorch allocated.

Usage: torch_gpu.py [--latent 128] [--repeats 5] [--steps 30] [--dtype fp16|bf16]
"""

import argparse
import json
import statistics
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

# Published SDXL 1.0 configurations (diffusers names).
BASE_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[320, 640, 1280], layers_per_block=2,
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
    cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
REFINER_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    block_out_channels=[384, 768, 1536, 1536], layers_per_block=2,
    transformer_layers_per_block=4, attention_head_dim=[6, 12, 24, 24],
    cross_attention_dim=1280, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560,
)
VAE = dict(
    in_channels=3, out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
    sample_size=1024,
)


def median_seconds(fn, repeats):
    fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def unet_step(config, dtype, latent, context_dim, time_ids):
    unet = UNet2DConditionModel(**config).to("cuda", dtype).eval()
    x = torch.randn(2, 4, latent, latent, device="cuda", dtype=dtype)
    t = torch.full((2,), 500.0, device="cuda")
    ctx = torch.randn(2, 77, context_dim, device="cuda", dtype=dtype)
    pooled = torch.randn(2, 1280, device="cuda", dtype=dtype)
    ids = torch.randn(2, time_ids, device="cuda", dtype=dtype)

    def step():
        with torch.no_grad():
            eps = unet(x, t, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
            cond, uncond = eps.chunk(2)
            return uncond + 7.0 * (cond - uncond)

    return unet, step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    args = ap.parse_args()
    dtype = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "dtype": args.dtype,
           "latent": args.latent, "parts": {}}

    torch.cuda.reset_peak_memory_stats()
    base, step = unet_step(BASE_UNET, dtype, args.latent, 2048, 6)
    out["parts"]["unet_base_step"] = median_seconds(step, args.repeats)
    del base, step
    refiner, step = unet_step(REFINER_UNET, dtype, args.latent, 1280, 5)
    out["parts"]["unet_refiner_step"] = median_seconds(step, args.repeats)
    del refiner, step
    out["peak_unet_gib"] = torch.cuda.max_memory_allocated() / 2**30

    vae = AutoencoderKL(**VAE).to("cuda", torch.float32).eval()
    z = torch.randn(1, 4, args.latent, args.latent, device="cuda")

    def decode():
        with torch.no_grad():
            return vae.decode(z / 0.13025).sample

    out["parts"]["vae_decode_f32"] = median_seconds(decode, max(1, args.repeats // 2))
    switch = round(args.steps * 0.667)
    out["parts"]["generate_estimate"] = (
        switch * out["parts"]["unet_base_step"]
        + (args.steps - switch) * out["parts"]["unet_refiner_step"]
        + out["parts"]["vae_decode_f32"]
    )
    out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
