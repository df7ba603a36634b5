"""Training: the fine-tuning loop, checkpoints and resume."""
