"""A generative facial motion prior trained on annotations (FLAME parameter sequences).

``data`` reads annotation ``params.npz`` folders into per-clip sequences, ``model`` is the
transition CVAE, ``train`` trains and loads priors, ``generate`` samples continuations (and the
hold / linear AR baselines), ``evaluate`` scores them against held-out sequences, ``render`` draws
generated meshes.
"""
