"""Priors: where NeuFace starts (``starting``: the packaged encoder, checkpoints, default learning rates;
``deca_import``: DECA / EMOCA encoder weights read from their PyTorch files into an encoder checkpoint)."""
