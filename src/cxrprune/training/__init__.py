"""Training one seed: architectures, augmentation, the training loop, the ``model.pt`` file
and the per-epoch resume file."""
