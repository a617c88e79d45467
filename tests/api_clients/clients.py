"""Drives a fooocus-rs server with the real A1111 and OpenAI clients from PyPI.

Usage: python clients.py HOST PORT. Exits non-zero (with the failed check) on any mismatch.
The server runs the tiny fixture models; its preset forces one step on requests that force none.
"""

import base64
import io
import sys
import threading
import time

import openai
import webuiapi
from PIL import Image

host, port = sys.argv[1], int(sys.argv[2])


def seed_of(image):
    """The seed the image's A1111 text names."""
    text = image.info["parameters"]
    pairs = dict(p.split(": ", 1) for p in text.splitlines()[-1].split(", ") if ": " in p)
    return int(pairs["Seed"])


def check_webuiapi():
    api = webuiapi.WebUIApi(host=host, port=port, sampler="Euler a", steps=2)
    names = api.util_get_model_names()
    assert any(n.startswith("sdxl_base.safetensors [") for n in names), names
    api.util_set_model("sdxl_base")
    assert api.util_get_current_model().startswith("sdxl_base.safetensors ["), api.util_get_current_model()
    samplers = api.util_get_sampler_names()
    assert "Euler a" in samplers and "DPM++ 2M SDE" in samplers, samplers

    r = api.txt2img(prompt="a lighthouse", seed=42, width=64, height=72, steps=2, batch_size=2)
    assert len(r.images) == 2, r.images
    assert [i.size for i in r.images] == [(64, 72), (64, 72)]
    assert r.info["all_seeds"] == [42, 43], r.info
    assert [seed_of(i) for i in r.images] == [42, 43]
    assert r.parameters["seed"] == 42

    r2 = api.img2img(images=[r.image], prompt="a lighthouse at dusk", denoising_strength=0.6,
                     seed=7, width=80, height=64, steps=2)
    assert r2.image.size == (80, 64), r2.image.size
    assert seed_of(r2.image) == 7
    assert "Denoising strength" in r2.image.info["parameters"] or r2.info["denoising_strength"] == 0.6

    up = api.extra_single_image(image=r2.image, upscaler_1="ESRGAN_4x", upscaling_resize=2)
    assert up.image.size == (160, 128), up.image.size
    info = api.png_info(r2.image)
    assert info.parameters["Seed"] == "7" and info.parameters["Size-1"] == "80", info.parameters

    idle = api.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0, idle
    assert api.skip() is None
    assert api.interrupt() == {}

    # A long run, interrupted while it samples: the waiting call still answers 200.
    result = {}

    def long_run():
        result["r"] = api.txt2img(prompt="a long night", seed=1, width=512, height=512, steps=60,
                                  batch_size=3)

    worker = threading.Thread(target=long_run)
    worker.start()
    seen = None
    deadline = time.time() + 120
    while time.time() < deadline:
        p = api.get_progress()
        if p["state"]["job_count"] > 0 and p["state"]["sampling_step"] > 0:
            seen = p
            break
        time.sleep(0.05)
    assert seen is not None, "the long run never showed progress"
    assert 0 < seen["progress"] <= 1, seen
    api.interrupt()
    worker.join(120)
    assert not worker.is_alive()
    assert len(result["r"].images) < 3, "interrupt did not stop the run"
    print("webuiapi: ok")


def check_openai():
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused")
    res = client.images.generate(model="dall-e-3", prompt="a lighthouse", n=2, size="1024x1024")
    assert len(res.data) == 2, res
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in res.data]
    assert [i.size for i in images] == [(1024, 1024)] * 2
    seeds = [seed_of(i) for i in images]
    assert seeds[1] == seeds[0] + 1, seeds
    assert all("a lighthouse" in d.revised_prompt for d in res.data)
    try:
        client.images.generate(prompt="x", n=100)
        raise AssertionError("n=100 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.param == "n", e
        assert "10" in str(e), e
    print("openai: ok")


check_webuiapi()
check_openai()
