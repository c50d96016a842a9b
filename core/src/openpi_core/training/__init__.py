"""Backend-neutral training: configs, the learning-rate schedule, LoRA and freezing rules,
the trainer contract every backend fulfils, checkpoints and the loop around them."""
