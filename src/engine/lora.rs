//! kohya LoRAs: reading, key matching against a checkpoint, and merging into weights at load.
