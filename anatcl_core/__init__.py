"""AnatCL compendium core library: models, losses and kernels, data readers, synthetic cohort."""

__version__ = "0.1.0"
