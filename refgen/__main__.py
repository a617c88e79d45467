"""python -m refgen --out fixtures [--only part,part]"""
import argparse
import os
import shutil
import time

from .util import check_writer, setup_torch


def main():
    ap = argparse.ArgumentParser(description="Generate the fooocus-rs test fixtures (CPU, seeded, byte-reproducible).")
    ap.add_argument("--out", default="fixtures")
    ap.add_argument("--only", default="tiny,image,samplers,layouts",
                    help="comma list of: tiny, image (needs tiny), samplers, layouts")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup_torch(args.threads)
    check_writer()
    parts = set(args.only.split(","))
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), "fixtures_readme.md"), os.path.join(args.out, "README.md"))
    if "tiny" in parts:
        from . import tiny
        models, ref = tiny.generate(os.path.join(args.out, "tiny-sdxl"), args.threads)
        print(f"tiny-sdxl done ({time.time() - t0:.0f}s)", flush=True)
        if "image" in parts:
            from . import image
            image.generate(models, ref, os.path.join(args.out, "image-to-image"), os.path.join(args.out, "tiny-sdxl"))
            print(f"image-to-image done ({time.time() - t0:.0f}s)", flush=True)
    elif "image" in parts:
        ap.error("the image part needs the tiny part in the same run (it uses its models)")
    if "samplers" in parts:
        from . import samplers
        samplers.generate(os.path.join(args.out, "samplers"))
        print(f"samplers done ({time.time() - t0:.0f}s)", flush=True)
    if "layouts" in parts:
        from . import layouts
        layouts.generate(os.path.join(args.out, "layouts"))
        print(f"layouts done ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
