"""Real-time 3D face regression and live tracking.

``regressor`` (a MobileNet ``Encoder`` regressing FLAME parameters from one crop, batch-1
inference), ``train`` (synthetic renders + distillation from annotations; ``train-regressor``),
``sources`` (camera, file, stream, paced frames), ``filters`` (One-Euro), ``track`` (detector,
tracker, ``track()`` generator, parameter output) and ``live`` (the ``live`` command's loop and
overlay). See docs/realtime.md.
"""
