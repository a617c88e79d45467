"""The tiny-sdxl folder: models, configs, tokenizer, references, Fooocus semantics, LoRA."""
import os

from . import config as C
from . import engine, models as M, tokenizer as T
from .util import save_json, save_tensors, versions
from .verify import check_single_files


def generate(out, threads):
    m = M.TinySDXL()
    base, refiner = M.base_single_file(m), M.refiner_single_file(m)
    check = check_single_files(m, base, refiner)
    save_tensors(os.path.join(out, "sdxl_base.safetensors"), base)
    save_tensors(os.path.join(out, "sdxl_refiner.safetensors"), refiner)
    cfg = M.tiny_configs()
    cfg["notes"]["single_file_check"] = "diffusers' single-file converters map both files back to the models' tensors with difference 0"
    cfg["tensor_counts"] = {"sdxl_base.safetensors": len(base), "sdxl_refiner.safetensors": len(refiner)}
    save_json(os.path.join(out, "tiny_configs.json"), cfg)

    tk = T.Tok(T.write(os.path.join(out, "tokenizer", "clip-tokenizer.json")))
    texts = list(C.PROMPTS) + list(C.CHUNK_PROMPTS.values())
    for p in list(C.CHUNK_PROMPTS.values()):
        texts += p.split()
    tok_check = T.cross_check(tk, texts)

    summary = {}
    ref = engine.generate(m, tk, os.path.join(out, "reference"), summary)
    summary["tokenizer_check"] = tok_check
    summary["single_file_check"] = check
    summary["versions"] = versions()
    summary["threads"] = threads

    from . import fooocus, lora
    fooocus.generate(m, tk, ref, os.path.join(out, "fooocus"), summary)
    save_json(os.path.join(out, "reference", "reference.json"), summary)
    lora.generate(m, tk, ref, base, os.path.join(out, "lora"))
    return m, ref
