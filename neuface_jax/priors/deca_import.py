"""Import DECA / EMOCA encoder weights from their PyTorch files into a project encoder (no torch).

* DECA ``deca_model.tar``: a dict whose ``E_flame`` state dict holds ``encoder.*`` (a torchvision
  ResNet-50 without ``fc``) and ``layers.0`` / ``layers.2`` (Linear → ReLU → Linear to 236 values:
  shape 100, texture 50, expression 50, pose 6, camera 3, light 27).
* EMOCA v2 ``.ckpt`` (PyTorch Lightning): ``state_dict`` with ``deca.E_flame.*`` (as above) and
  ``deca.E_expression.*`` (a second encoder of the same layout whose 50 outputs replace the
  expression) -- imported as an ``EncoderConfig(expression_encoder=True)``.

The files are read by ``flame_jax.io.torch_zip`` (allow-list unpickler, nothing executed; trainer
extras become inert placeholders and are ignored). Widths, block counts and the head's hidden size
are read from the weights, so narrowed copies of the layout import as well. Conversions: conv
``OIHW`` → ``HWIO``, Linear ``[out, in]`` → ``[in, out]``, BatchNorm weight / bias / running mean /
running var → scale / bias / mean / var (``num_batches_tracked`` is dropped).

The imported encoder's raw outputs are the source's (DECA's 236-value layout); images go in as
``[B, H, W, 3]`` RGB in [0, 1], like the source's NCHW input without normalization.
"""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np
from flax import nnx

from flame_jax.io.torch_zip import load_torch_checkpoint
from neuface_jax.core import encoder as encoder_lib

__all__ = ["FORMATS", "convert_state", "import_encoder", "read_encoder_weights"]

_log = logging.getLogger(__name__)

#: Source formats: format name → state-dict prefixes of the (flame, expression) encoders.
FORMATS = {"deca": ("E_flame.", None), "emoca": ("deca.E_flame.", "deca.E_expression.")}
#: DECA's output split (shape, texture, expression, pose 6, camera 3, light).
_DECA_SIZES = dict(n_shape=100, n_tex=50, n_expr=50, n_light=27)
_DECA_OUTPUTS = 236  # the sizes above + pose 6 + camera 3
#: Our BatchNorm leaves → torch's BatchNorm2d tensors.
_BN_TORCH = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def read_encoder_weights(path, fmt: str, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The encoder tensors of a DECA / EMOCA file: a flat ``{name: array}`` whose names start with the
    format's prefixes (``E_flame.``; EMOCA: ``deca.E_flame.``, ``deca.E_expression.``). Only these
    tensors' storages are read (the other networks and the trainer state of the file are not)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown encoder format {fmt!r}; expected one of {sorted(FORMATS)}")
    prefixes = tuple(p for p in FORMATS[fmt] if p)

    def select(obj) -> dict:
        # Runs on the unpickled object before its storages are read (tensors still pending).
        entry = "state_dict" if fmt == "emoca" else "E_flame"
        if not isinstance(obj, dict) or not isinstance(obj.get(entry), dict):
            found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{path}: a {fmt} checkpoint has a {entry!r} state dict (found {found})")
        state = obj[entry] if fmt == "emoca" else {f"E_flame.{k}": v for k, v in obj[entry].items()}
        return {k: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefixes)}

    out = load_torch_checkpoint(path, max_bytes=max_bytes, extras=True, select=select)
    for name, value in out.items():
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    for p in prefixes:
        if not any(k.startswith(p) for k in out):
            raise ValueError(f"{path}: no {p}* tensors in this {fmt} checkpoint")
    return out


def _layout(weights: dict[str, np.ndarray], prefix: str) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """``(stage widths, blocks per stage, head hidden size, outputs)`` of the encoder under ``prefix``."""
    widths, blocks = [], []
    for i in range(1, 5):
        n = 0
        while f"{prefix}encoder.layer{i}.{n}.conv1.weight" in weights:
            n += 1
        if n == 0:
            raise ValueError(f"no {prefix}encoder.layer{i}.0.conv1.weight: not a ResNet-50-layout encoder")
        widths.append(int(weights[f"{prefix}encoder.layer{i}.0.conv1.weight"].shape[0]))
        blocks.append(n)
    head = weights.get(f"{prefix}layers.0.weight")
    last = weights.get(f"{prefix}layers.2.weight")
    if head is None or last is None:
        raise ValueError(f"no {prefix}layers.0 / {prefix}layers.2 Linear layers in the checkpoint")
    return tuple(widths), tuple(blocks), int(head.shape[0]), int(last.shape[0])


def _config_from_weights(weights: dict[str, np.ndarray], flame: str, expression: str | None):
    """The ``EncoderConfig`` whose layer shapes match the tensors of the FLAME (and expression) encoder."""
    widths, blocks, hidden, n_out = _layout(weights, flame)
    if n_out != _DECA_OUTPUTS:
        raise ValueError(f"{flame}layers.2 predicts {n_out} values; DECA's layout has {_DECA_OUTPUTS}")
    if expression is not None:
        expected = (widths, blocks, hidden, _DECA_SIZES["n_expr"])
        if _layout(weights, expression) != expected:
            raise ValueError(
                f"the expression encoder's layout {_layout(weights, expression)} differs from (widths, blocks, "
                f"hidden, outputs) = {expected}"
            )
    return encoder_lib.EncoderConfig(
        arch="resnet50", layout="deca", image_size=224, head_hidden=hidden, zero_init_head=False,
        resnet_widths=widths, resnet_blocks=blocks, expression_encoder=expression is not None, **_DECA_SIZES,
    )


def _torch_name(path: tuple[str, ...], prefixes: dict[str, str]) -> tuple[str, str]:
    """Our parameter path (``("backbone", "layer1", "0", "bn1", "scale")``) → (torch name, kind)."""
    top, *rest = path
    prefix = prefixes[top]
    if top in ("fc1", "fc2", "expr_fc1", "expr_fc2"):
        layer = "layers.0" if top.endswith("fc1") else "layers.2"
        return f"{prefix}{layer}.{'weight' if rest[0] == 'kernel' else 'bias'}", "linear" if rest[0] == "kernel" else ""
    module, leaf = ".".join(rest[:-1]), rest[-1]
    module = re.sub(r"^(layer[1-4])\.(\d+)\.downsample_conv", r"\1.\2.downsample.0", module)
    module = re.sub(r"^(layer[1-4])\.(\d+)\.downsample_bn", r"\1.\2.downsample.1", module)
    if leaf == "kernel":
        return f"{prefix}encoder.{module}.weight", "conv"
    if leaf not in _BN_TORCH:
        raise ValueError(f"no torch counterpart for the encoder parameter {'/'.join(path)}")
    return f"{prefix}encoder.{module}.{_BN_TORCH[leaf]}", ""


def _ignored(name: str) -> bool:
    """Tensors the encoder does not use: BatchNorm's step counters and a classifier a full
    torchvision ResNet-50 would carry (``encoder.fc``, unused by the regression head)."""
    return name.endswith("num_batches_tracked") or re.search(r"(^|\.)encoder\.fc\.(weight|bias)$", name) is not None


def convert_state(weights: dict[str, np.ndarray], config: encoder_lib.EncoderConfig, prefixes: dict[str, str]) -> dict:
    """The pure-dict encoder state (``nnx.to_pure_dict`` structure) holding ``weights`` converted.

    ``prefixes`` maps our top-level modules (``backbone``, ``fc1``, ``fc2``, and ``expr_*``) to the
    torch name prefix they come from. Every parameter must be found with its exact shape, and every
    tensor under the prefixes must be used (``_ignored`` ones aside): a layout mismatch is an error.
    """
    abstract = nnx.eval_shape(lambda: encoder_lib.Encoder(config, rngs=nnx.Rngs(0)))
    target = encoder_lib._to_pure_dict(nnx.state(abstract))
    used: set[str] = set()

    def fetch(path, leaf):
        names = tuple(encoder_lib._key_name(k) for k in path)
        name, kind = _torch_name(names, prefixes)
        if name not in weights:
            raise ValueError(f"missing tensor {name} (for {'/'.join(names)})")
        value = weights[name]
        if kind == "conv":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        elif kind == "linear":
            value = value.T if value.ndim == 2 else value
        if tuple(value.shape) != tuple(leaf.shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)}; the encoder expects {tuple(leaf.shape)}")
        used.add(name)
        return np.ascontiguousarray(value, dtype=np.float32)

    state = jax.tree_util.tree_map_with_path(fetch, target)
    wanted = tuple(dict.fromkeys(prefixes.values()))
    unused = sorted(k for k in weights if k.startswith(wanted) and k not in used and not _ignored(k))
    if unused:
        raise ValueError(f"tensors of an unknown layout: {', '.join(unused[:6])}{', ...' if len(unused) > 6 else ''}")
    return state


def import_encoder(fmt: str, path, out, *, overwrite: bool = False, max_bytes: int | None = None):
    """Reads a DECA (``fmt="deca"``) or EMOCA (``"emoca"``) file and saves it as a project encoder
    checkpoint at ``out`` (``encoder.save_encoder``). Returns ``(model, config)``."""
    weights = read_encoder_weights(path, fmt, max_bytes=max_bytes)
    flame, expression = FORMATS[fmt]
    prefixes = {"backbone": flame, "fc1": flame, "fc2": flame}
    if expression is not None:
        prefixes.update(expr_backbone=expression, expr_fc1=expression, expr_fc2=expression)
    try:
        config = _config_from_weights(weights, flame, expression)
        state = convert_state(weights, config, prefixes)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    del weights
    model = nnx.eval_shape(lambda: encoder_lib.Encoder(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(model)
    nnx.replace_by_pure_dict(abstract_state, state)  # host arrays: no second copy of the weights
    model = nnx.merge(graphdef, abstract_state)
    encoder_lib.save_encoder(os.fspath(out), model, config, overwrite=overwrite)
    _log.debug("imported the %s encoder of %s into %s", fmt, path, out)
    return model, config
