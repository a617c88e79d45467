//! The SDXL engine: checkpoint loading, tokenizer, CLIP text encoders, UNet and VAE, in candle,
//! named after the original single-file (SGM/LDM) layout.
