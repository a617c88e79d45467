"""Every choice of this fixture set (dimensions, prompts, seeds, settings) in one place."""

SEED = 20240611

# Text encoders (transformers config names).
CLIP_L = dict(
    vocab_size=49408, hidden_size=40, intermediate_size=120, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, projection_dim=40, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)
CLIP_G = dict(
    vocab_size=49408, hidden_size=24, intermediate_size=60, num_hidden_layers=3,
    num_attention_heads=3, max_position_embeddings=77, hidden_act="gelu",
    layer_norm_eps=1e-5, projection_dim=48, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)

HEAD_DIM = 32  # UNet attention head width (SGM num_head_channels)


def _unet(model_channels, mult, depth, depth_mid, context_dim, time_id_dim, n_ids):
    return dict(model_channels=model_channels, channel_mult=list(mult), transformer_depth=list(depth),
                transformer_depth_middle=depth_mid, context_dim=context_dim,
                time_id_embed_dim=time_id_dim, n_time_ids=n_ids,
                adm_in_channels=CLIP_G["projection_dim"] + n_ids * time_id_dim)


BASE_UNET = _unet(32, (1, 2, 2), (0, 1, 2), 1,
                  CLIP_L["hidden_size"] + CLIP_G["hidden_size"], 32, 6)
REFINER_UNET = _unet(32, (1, 1, 2, 2), (0, 2, 1, 0), 3, CLIP_G["hidden_size"], 24, 5)
NUM_RES_BLOCKS = 2

VAE = dict(ch=32, ch_mult=[1, 1, 2, 1], num_res_blocks=2, z_channels=4, scale_factor=0.13025)
VAE_SCALE = 0.13025

# Engine references.
PROMPTS = [
    "an old lighthouse keeper reading by candlelight, oil on canvas, warm palette",
    "Neon-lit alley in Tokyo after rain: reflections, 35mm film grain & bokeh!! (cinematic, ultra-wide) \u2014 2077",
    "jpeg artifacts, deformed hands, oversaturated",
]
POSITIVE, NEGATIVE = 0, 2
IMAGE_HW = (192, 128)  # portrait: H > W
LATENT_HW = (IMAGE_HW[0] // 8, IMAGE_HW[1] // 8)
BASE_TIMESTEP = 637.0
REFINER_TIMESTEP = 213.0
BASE_TIME_IDS = [[768.0, 1152.0, 40.0, 8.0, 832.0, 1216.0], [640.0, 384.0, 0.0, 24.0, 1024.0, 704.0]]
REFINER_TIME_IDS = [[896.0, 640.0, 12.0, 0.0, 6.0], [896.0, 640.0, 12.0, 0.0, 2.5]]
SAMPLING_STEPS = 7
SAMPLING_CFG = 5.5

# Fooocus run.
FOOOCUS = dict(steps=9, refiner_switch=0.5, cfg=6.0, adaptive_cfg=4.5, sharpness=6.0,
               adm_positive=1.35, adm_negative=0.75, adm_end=0.4)
FOOOCUS_SEED = 4242
SHARPNESS_SHAPES = [[1, 4, 24, 16], [1, 4, 9, 20], [3, 4, 11, 8], [1, 4, 7, 7]]
CHUNK_PROMPTS = {
    # "a": a word that does not fit moves to chunk 2 (chunk 1 gets padding).
    "a": ("a quiet harbour town at dawn with fishing boats resting in the shallow bay, gulls circling "
          "over weathered wooden piers, mist drifting between pastel houses on the hillside, a lone "
          "fisherman mending nets beside stacked crates, soft diffuse light, muted colours, fine "
          "detail, medium format photograph, gentle film grain, calm and nostalgic atmosphere, "
          "wide angle, sharp focus, shot on rain-soaked autumn mornings with a tripod-mounted "
          "telephoto lens, reflections on wet cobblestones, seaweed on the rocks, 8k"),
    # "b": a word of >= 8 tokens straddles the boundary and is split.
    "b": ("portrait of a clockwork owl perched on brass gears inside a cluttered victorian workshop, "
          "intricate filigree feathers, glowing amber eyes, scattered pocket watches, dusty leather "
          "books, copper pipes along the walls, candle wax dripping over a workbench, soft window "
          "light, supercalifragilisticexpialidociousantidisestablishmentarianismfloccinaucinihilipilification "
          "volumetric light, dust particles, rich shadows, highly detailed engraving"),
}

# LoRA.
LORA_SEED = 99
LORA_STRENGTH = 0.55

# Samplers (analytic denoiser).
SAMPLER_SEED = 31337
SAMPLER_SHAPE = [1, 4, 6, 10]
SAMPLER_S = 0.6
SAMPLER_TABLE = dict(beta_start=0.0009, beta_end=0.011, n=800)
SAMPLER_STEPS = [1, 3, 21]

# Image to image (refgen/image.py). The upscaler: RRDBNet with spandrel's fixed growth 32.
RRDB = dict(in_nc=3, out_nc=3, nf=16, nb=2, gc=32, scale=4, seed=515,
            input_hw=(40, 56), input_seed=516, tile=24, overlap=8)
# Vary (Subtle): an input outside the [1024, 2048] shape-ceil band, so it is resized.
# Both runs: Speed (30 steps) forced to 9 steps; the switch step comes from the performance's
# steps, as in Fooocus (round(30 * 0.1) = 3), so the refiner takes the last 5 steps.
I2I_SETTINGS = dict(performance="Speed", performance_steps=30, refiner_switch=0.1)
VARY = dict(method="vary_subtle", input_hw=(448, 640), input_seed=601, steps=9, denoise=0.5, seed=602)
# Upscale (2x): a small input, so the SR image is brought to shape ceil 1024.
UPSCALE = dict(method="upscale_2x", input_hw=(64, 96), input_seed=701, factor=2.0, steps=9, denoise=0.382, seed=702)
# The square of the 1216 x 832 results stored as float (y, x, side): it spans tile seams.
CROP = (320, 384, 256)
# A Lanczos reduction of the Vary input (W, H), against Pillow.
REDUCED_WH = (311, 203)
