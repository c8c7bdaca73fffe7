"""Parity of imported DECA / EMOCA encoders with PyTorch's outputs, and the reader's peak memory.

Reads the files written by ``experiments/make_torch_encoder_fixtures.py`` (tiny or ``--full``)::

    python experiments/torch_encoder_parity.py --dir /tmp/full_encoder

For each of deca_model.tar (zip format), deca_legacy.tar (legacy format) and emoca.ckpt: the peak
memory traced while reading the file (numpy's allocations included) against its size, then the
import (``neuface-jax import-encoder``'s code path), the saved checkpoint loaded back with
``neuface_jax.load_encoder`` and its outputs on the saved images compared with torch's: the largest
absolute difference relative to the largest absolute torch output.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

import numpy as np

import neuface_jax
from flame_jax.io.torch_zip import load_torch_checkpoint
from neuface_jax.priors import deca_import

CASES = (
    ("deca", "deca_model.tar", "deca_out"),
    ("deca", "deca_legacy.tar", "deca_out"),
    ("emoca", "emoca.ckpt", "emoca_out"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    expected = np.load(os.path.join(args.dir, "expected.npz"))
    images = expected["images"].astype(np.float32) / 255.0
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name, key in CASES:
            path = os.path.join(args.dir, name)
            tracemalloc.start()
            t0 = time.perf_counter()
            load_torch_checkpoint(path, extras=True)
            read_s = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            out = os.path.join(tmp, name)
            deca_import.import_encoder(fmt, path, out)
            model, config = neuface_jax.load_encoder(out)
            got = np.asarray(model(images))
            want = expected[key]
            rel = float(np.abs(got - want).max() / np.abs(want).max())
            size = os.path.getsize(path)
            print(
                f"{name}: {size / 2**20:.1f} MiB, read in {read_s:.2f} s, peak {peak / 2**20:.1f} MiB "
                f"({peak / size:.2f}x the file); outputs {got.shape}, max |diff| / max |torch| = {rel:.2e} "
                f"(scale {np.abs(want).max():.3g}); widths {config.resnet_widths}, blocks {config.resnet_blocks}, "
                f"expression encoder {config.expression_encoder}"
            )


if __name__ == "__main__":
    main()
