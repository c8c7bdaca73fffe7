"""Priors: where NeuFace starts (``starting``: the packaged encoder, checkpoints, default learning rates)."""
