"""neuface_jax: fitting FLAME face meshes to videos with NeuFace's neural re-parameterized optimization.

Modules: ``camera`` (DECA weak-perspective camera, crop transforms), ``encoder`` (Flax NNX image
encoder predicting FLAME parameters), ``losses`` (pure, composable loss terms), and the data,
optimization, metrics and export modules built on them.
"""
