"""Times Fooocus' upscaler in PyTorch (spandrel's RRDBNet: nf 64, 23 blocks, 4x; random weights,
float32, CPU) on an N x N image in Fooocus' tiling (512-pixel tiles, 32 overlap, the linear
feather), for comparison with `fooocus bench --parts upscalerN` on the same machine.

    python benches/bench_upscaler.py --size 1024 --threads 2 --repeats 1
Prints one JSON line: {"part", "median_s", "samples_s", "peak_rss_bytes", "threads", "torch"}.
Needs torch and spandrel (refgen/requirements.txt)."""
import argparse
import json
import resource
import statistics
import sys
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    sys.path.insert(0, ".")
    from refgen.image import tiled_scale
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4).eval().float()
    image = torch.rand([1, 3, args.size, args.size], generator=torch.Generator().manual_seed(0))
    samples = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tiled_scale(image, net, 512, 512, 32, 4, 3)
        samples.append(time.perf_counter() - t0)
    print(json.dumps({
        "part": f"upscaler{args.size}", "median_s": statistics.median(samples), "samples_s": samples,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": args.threads, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
