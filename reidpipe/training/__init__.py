"""Training phase: model (timm backbone + BNNeck), losses, P x K sampler, augmentation, data module,
Lightning module, LR schedule and the ``train`` stage entry."""
