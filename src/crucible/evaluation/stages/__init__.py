"""Stage drivers: each reads a stage's checkpoints and packed splits and returns result rows (CAM, SCVAR samples,
tokenizer, floor/ceiling sets, speed, metric validity)."""
