"""Training: the trainer loop, LR schedule, checkpoints."""
