"""Image encoder Φ_w: a face crop → FLAME parameters and a weak-perspective camera (Flax NNX).

NeuFace optimizes the *weights* of this network per clip instead of the FLAME parameters
themselves (docs/method_notes.md). Two backbones share one head:

* ``arch="resnet50"``: torchvision-layout ResNet-50 (bottleneck blocks [3, 4, 6, 3], widths
  64…512 ×4 = 2048, stride on the 3×3 convolution, BatchNorm, 7×7 stem and 3×3 max-pool with
  torch's explicit padding), for 224×224 crops as in DECA's coarse encoder.
* ``arch="small"``: a tiny ResNet of basic blocks (default widths 16-32-64-128) that trains quickly
  on a CPU at 64×64 (any size works: the features are globally average-pooled).

``resnet_widths`` / ``resnet_blocks`` narrow the ResNet-50 layout (same layer names, fewer channels
or blocks): imported checkpoints of any width load, and tests use tiny ones. With
``expression_encoder=True`` a second backbone and head of the same kind (EMOCA's expression
encoder) predict the expression coefficients, which replace the first head's expression slice.

Head: global average pool → Linear ``head_hidden`` (1024) → ReLU → Linear to the raw output vector,
whose slices are given by ``output_slices`` (``layout="deca"``: shape 100, texture 50, expression 50,
pose 6 = global 3 + jaw 3, camera 3, lighting 27 = 236, DECA's order; ``layout="compact"``: only what
is used). ``decode_outputs`` turns the raw vector into a ``FlameParams`` pytree.

Images are NHWC RGB in [0, 1] (no mean/std normalization, as DECA).

Initialization: the final Linear has zero weights and a bias equal to the mean face (shape,
expression, pose all 0) at camera ``(cam_scale_init, *cam_translation_init)``, so the untrained
network already predicts a sensible face. The gradient with respect to that layer's weights is
``features ⊗ upstream gradient``, which is non-zero, so training starts normally.

Functional core (for ``jax.jit``/``vmap``/``grad``)::

    model = Encoder(config, rngs=nnx.Rngs(0))         # or load_encoder(path)
    graphdef, trainable, rest = split_params(model, freeze_bn=True)
    raw = apply(graphdef, trainable, rest, images)    # pure function of pytrees
    params = decode_outputs(raw, config)              # FlameParams

With ``freeze_bn=True`` (EFT style, the reference) BatchNorm uses its running statistics and its
scale/bias live in ``rest``, out of the optimizer's reach. With ``freeze_bn=False`` BN scale/bias are
trainable and ``apply(..., update_bn_stats=True)`` normalizes with batch statistics and returns the
updated ``rest`` as well.

Checkpoints: ``save_encoder`` / ``load_encoder`` use orbax (array tree + the config as JSON); nothing
is pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flame_jax.rotations import deca_pose_to_full
from neuface_jax.core import conv as conv_lib
from neuface_jax.core.mobilenet import LandmarkHead, MobileNet, soft_argmax
from neuface_jax.core.mobilenet import feature_width as mobilenet_feature_width

_log = logging.getLogger(__name__)

#: Default scale of the initial camera, normalized crop units per metre. The reference crop is the
#: 68-landmark box ×1.1 ×1.25 ≈ 1.375× the landmark extent; FLAME's landmark box is ≈ 0.14–0.16 m
#: wide, so the crop side is ≈ 0.19–0.22 m and a crop of width 2 (normalized units) needs
#: s ≈ 2 / 0.22 ≈ 9. The face then fills most of the crop, as in DECA's predictions.
DEFAULT_CAM_SCALE = 9.0

_ARCHS = ("resnet50", "small", "mobilenet")
_LAYOUTS = ("deca", "compact")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_CONV_BACKWARDS = ("gemm", "xla")
_CHECKPOINT_FORMAT = "neuface_jax.encoder"  # the on-disk format name (not the module path)
_CHECKPOINT_VERSION = 1
_CHECKSUM_ALGORITHM = "sha256 of each array's C-order little-endian bytes"

# Accepted ranges of the numeric config fields (inclusive): a config read from a checkpoint is
# validated against them before any layer is built, so a crafted file cannot ask for a huge network.
_INT_RANGES = {
    "n_shape": (0, 1000),
    "n_expr": (0, 1000),
    "n_tex": (0, 1000),
    "n_light": (0, 1000),
    "image_size": (8, 2048),
    "head_hidden": (1, 16384),
    "landmark_head": (0, 1000),
}
_SMALL_STAGES = (1, 8)
_SMALL_WIDTH = (1, 2048)
_SMALL_BLOCKS = (0, 32)
_FLOAT_RANGES = {
    "cam_scale_init": (1e-6, 1e6),
    "bn_momentum": (0.0, 1.0),
    "bn_epsilon": (1e-12, 1.0),
}
_CAM_TRANSLATION_MAX = 1e3  # metres
_BOOL_FIELDS = ("predict_neck", "predict_eyes", "zero_init_head", "expression_encoder")


def _checked_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _checked_float(name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be finite and in [{lo}, {hi}], got {value}")
    return float(value)


def _checked_ints(name: str, values, lo: int, hi: int) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    if not _SMALL_STAGES[0] <= len(values) <= _SMALL_STAGES[1]:
        raise ValueError(f"{name} must have {_SMALL_STAGES[0]} to {_SMALL_STAGES[1]} entries, got {len(values)}")
    return tuple(_checked_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(values))


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Static description of an encoder (stored as JSON next to its weights).

    Attributes:
      arch: "resnet50" (DECA's backbone, 224×224), "small" (CPU-friendly tiny ResNet) or "mobilenet"
        (inverted residual blocks for real-time regression, ``core.mobilenet``; its stages are
        ``small_widths`` / ``small_blocks``).
      layout: raw output order: "deca" (shape, texture, expression, pose6, camera, light; then neck
        3 and eyes 6 when enabled) or "compact" (shape, expression, global 3, jaw 3, [neck 3],
        [eyes 6], camera 3).
      n_shape: identity coefficients predicted.
      n_expr: expression coefficients predicted.
      n_tex: texture slots in the "deca" layout (predicted, unused).
      n_light: lighting slots in the "deca" layout (predicted, unused).
      predict_neck: predict the neck rotation (otherwise 0).
      predict_eyes: predict both eyeball rotations (otherwise 0).
      image_size: crop side in pixels the encoder is meant for (informational: the network is
        size-agnostic thanks to the global pool; data code uses it to size crops).
      head_hidden: width of the hidden Linear layer of the head.
      small_widths: channel widths of the stages of the "small" backbone.
      small_blocks: basic blocks per stage of the "small" backbone.
      resnet_widths: bottleneck widths of the four stages of the "resnet50" backbone (torchvision's
        64-128-256-512; the stem has the first width, the features are 4× the last).
      resnet_blocks: bottleneck blocks per stage of the "resnet50" backbone (3-4-6-3).
      expression_encoder: a second backbone and head (same arch and widths) predict the expression,
        replacing the first head's expression slice (EMOCA's two-encoder form).
      cam_scale_init: initial camera scale s0 (normalized crop units per metre).
      cam_translation_init: initial camera translation (t_x, t_y), metres.
      zero_init_head: zero the final Linear's weights so the untrained output is exactly the bias.
      dtype: compute dtype of the backbone ("float32", or "bfloat16" on GPU/TPU). Parameters stay
        float32; the head always computes in float32.
      bn_momentum: running-average decay of BatchNorm (0.9 = torch's momentum 0.1).
      bn_epsilon: BatchNorm epsilon (torch's 1e-5).
      conv_backward: how the ResNet-50 backbone's convolution and max-pool gradients are computed:
        "gemm" (``core.conv``: kernel gradients as matrix products, input gradients as stride-1
        convolutions, the max-pool's without select-and-scatter; the forms XLA:CPU runs fast; on GPU/TPU
        XLA's own) or "xla" (XLA's own transposes everywhere). The forward and the parameters are the
        same either way. The
        "small" and "mobilenet" backbones always use XLA's (at their sizes the GEMM form did not win).
        ``to_dict`` leaves the field out at its default, so configs written before it existed match.
      landmark_head: points of the spatial 2D landmark head (``mobilenet.LandmarkHead`` on the stride-8
        and stride-16 activations, ``Encoder.with_landmarks``); 0 (default, left out by ``to_dict``): none.
        MobileNet backbone only.
    """

    arch: str = "resnet50"
    layout: str = "deca"
    n_shape: int = 100
    n_expr: int = 50
    n_tex: int = 50
    n_light: int = 27
    predict_neck: bool = False
    predict_eyes: bool = False
    image_size: int = 224
    head_hidden: int = 1024
    small_widths: tuple[int, ...] = (16, 32, 64, 128)
    small_blocks: tuple[int, ...] = (1, 1, 1, 1)
    resnet_widths: tuple[int, ...] = (64, 128, 256, 512)
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)
    expression_encoder: bool = False
    cam_scale_init: float = DEFAULT_CAM_SCALE
    cam_translation_init: tuple[float, float] = (0.0, 0.0)
    zero_init_head: bool = True
    dtype: str = "float32"
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    conv_backward: str = "gemm"
    landmark_head: int = 0

    def __post_init__(self):
        if self.arch not in _ARCHS:
            raise ValueError(f"arch must be one of {_ARCHS}, got {self.arch!r}")
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {self.layout!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        if self.conv_backward not in _CONV_BACKWARDS:
            raise ValueError(f"conv_backward must be one of {_CONV_BACKWARDS}, got {self.conv_backward!r}")
        # Normalized values (JSON round trips give lists; keep the dataclass hashable).
        fixed: dict[str, Any] = {name: _checked_int(name, getattr(self, name), *r) for name, r in _INT_RANGES.items()}
        fixed.update({name: _checked_float(name, getattr(self, name), *r) for name, r in _FLOAT_RANGES.items()})
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
            fixed[name] = bool(getattr(self, name))
        fixed["small_widths"] = _checked_ints("small_widths", self.small_widths, *_SMALL_WIDTH)
        fixed["small_blocks"] = _checked_ints("small_blocks", self.small_blocks, *_SMALL_BLOCKS)
        fixed["resnet_widths"] = _checked_ints("resnet_widths", self.resnet_widths, *_SMALL_WIDTH)
        fixed["resnet_blocks"] = _checked_ints("resnet_blocks", self.resnet_blocks, *_SMALL_BLOCKS)
        if len(fixed["resnet_widths"]) != 4 or len(fixed["resnet_blocks"]) != 4:
            raise ValueError(f"resnet_widths and resnet_blocks must have 4 entries, got {self.resnet_widths} "
                             f"and {self.resnet_blocks}")
        if len(fixed["small_widths"]) != len(fixed["small_blocks"]):
            raise ValueError(
                f"small_widths {self.small_widths} and small_blocks {self.small_blocks} must be of equal length"
            )
        t = self.cam_translation_init
        if isinstance(t, (str, bytes)) or not isinstance(t, (tuple, list)) or len(t) != 2:
            raise ValueError(f"cam_translation_init must have 2 values, got {t!r}")
        fixed["cam_translation_init"] = tuple(
            _checked_float(f"cam_translation_init[{i}]", v, -_CAM_TRANSLATION_MAX, _CAM_TRANSLATION_MAX)
            for i, v in enumerate(t)
        )
        if fixed["landmark_head"] and (self.arch != "mobilenet" or len(fixed["small_widths"]) < 3):
            raise ValueError(f"landmark_head needs the mobilenet backbone with 3 or more stages, got arch "
                             f"{self.arch!r} with {len(fixed['small_widths'])}")
        for name, value in fixed.items():
            object.__setattr__(self, name, value)

    @classmethod
    def small(cls, **overrides) -> "EncoderConfig":
        """The CPU-friendly preset: tiny ResNet at 64×64, compact layout, 256-wide head."""
        kw = dict(arch="small", layout="compact", image_size=64, head_hidden=256)
        kw.update(overrides)
        return cls(**kw)

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict (tuples become lists; ``conv_backward`` only when not the default)."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        if d["conv_backward"] == _CONV_BACKWARDS[0]:
            del d["conv_backward"]
        if not d["landmark_head"]:
            del d["landmark_head"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        """The config of a ``to_dict`` dict; unknown fields and out-of-range values are errors."""
        if not isinstance(d, dict):
            raise ValueError(f"an encoder config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {sorted(unknown)}")
        return cls(**d)


def output_slices(config: EncoderConfig) -> dict[str, slice]:
    """Where each quantity lives in the raw output vector.

    Keys: "shape", "expression", "global_pose", "jaw_pose", "camera", and when present "texture",
    "light" (deca layout only), "neck_pose", "eye_pose" (6 values: left eye 3, right eye 3).
    """
    sizes: list[tuple[str, int]]
    if config.layout == "deca":
        sizes = [
            ("shape", config.n_shape),
            ("texture", config.n_tex),
            ("expression", config.n_expr),
            ("global_pose", 3),
            ("jaw_pose", 3),
            ("camera", 3),
            ("light", config.n_light),
        ]
        # Extensions go after DECA's 236 values so pretrained DECA-layout weights still line up.
        if config.predict_neck:
            sizes.append(("neck_pose", 3))
        if config.predict_eyes:
            sizes.append(("eye_pose", 6))
    else:
        sizes = [("shape", config.n_shape), ("expression", config.n_expr), ("global_pose", 3), ("jaw_pose", 3)]
        if config.predict_neck:
            sizes.append(("neck_pose", 3))
        if config.predict_eyes:
            sizes.append(("eye_pose", 6))
        sizes.append(("camera", 3))
    out, start = {}, 0
    for name, n in sizes:
        out[name] = slice(start, start + n)
        start += n
    return out


def num_outputs(config: EncoderConfig) -> int:
    """Length of the raw output vector (236 for the default DECA layout)."""
    return max(s.stop for s in output_slices(config).values())


def initial_output(config: EncoderConfig) -> jax.Array:
    """[num_outputs] raw vector of the mean face at the initial camera (the head's initial bias)."""
    b = jnp.zeros((num_outputs(config),), jnp.float32)
    cam = output_slices(config)["camera"]
    return b.at[cam].set(jnp.asarray([config.cam_scale_init, *config.cam_translation_init], jnp.float32))


@dataclasses.dataclass(frozen=True)
class FlameParams:
    """Decoded encoder outputs, per image.

    Attributes:
      shape: [..., n_shape] identity coefficients (one per image; see ``clip_shape``).
      expression: [..., n_expr] expression coefficients.
      pose: [..., 15] full FLAME pose, axis-angle: global, neck, jaw, eye_left, eye_right
        (neck/eyes zero unless predicted).
      cam: [..., 3] weak-perspective camera (s, t_x, t_y), see ``camera.project``.
    """

    shape: jax.Array
    expression: jax.Array
    pose: jax.Array
    cam: jax.Array

    @property
    def global_pose(self) -> jax.Array:
        """[..., 3] head rotation, axis-angle."""
        return self.pose[..., 0:3]

    @property
    def jaw_pose(self) -> jax.Array:
        """[..., 3] jaw rotation, axis-angle."""
        return self.pose[..., 6:9]


jax.tree_util.register_dataclass(FlameParams, data_fields=["shape", "expression", "pose", "cam"], meta_fields=[])


def decode_outputs(raw: jax.Array, config: EncoderConfig) -> FlameParams:
    """Raw encoder outputs [..., num_outputs] → ``FlameParams`` with the same leading dimensions."""
    raw = jnp.asarray(raw)
    n = num_outputs(config)
    if raw.ndim < 1 or raw.shape[-1] != n:
        raise ValueError(f"raw outputs must be [..., {n}] for this config, got shape {raw.shape}")
    sl = output_slices(config)
    pose = deca_pose_to_full(jnp.concatenate([raw[..., sl["global_pose"]], raw[..., sl["jaw_pose"]]], -1))
    if "neck_pose" in sl:
        pose = pose.at[..., 3:6].set(raw[..., sl["neck_pose"]])
    if "eye_pose" in sl:
        pose = pose.at[..., 9:15].set(raw[..., sl["eye_pose"]])
    return FlameParams(
        shape=raw[..., sl["shape"]],
        expression=raw[..., sl["expression"]],
        pose=pose,
        cam=raw[..., sl["camera"]],
    )


def clip_shape(shape_per_image: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """One identity per clip: the masked mean of per-image shapes over the image axis.

    Args:
      shape_per_image: [..., N, n_shape] shapes predicted for the N images (frames × views) of a clip.
      mask: [..., N] bool/float validity (padded or failed images excluded); None = all valid.

    Returns:
      [..., n_shape]; zeros where every image is masked (never NaN, even with NaN in masked rows).
    """
    x = jnp.asarray(shape_per_image)
    if x.ndim < 2:
        raise ValueError(f"shape_per_image must be [..., N, n_shape], got shape {x.shape}")
    if mask is None:
        return jnp.mean(x, axis=-2)
    m = jnp.asarray(mask, x.dtype)
    if m.shape != x.shape[:-1]:
        raise ValueError(f"mask must be {x.shape[:-1]} for shapes {x.shape}, got {m.shape}")
    m = m[..., None]
    num = jnp.sum(jnp.where(m > 0, x * m, 0.0), axis=-2)
    den = jnp.sum(m, axis=-2)
    return num / jnp.where(den > 0, den, 1.0)


# ---------------------------------------------------------------------------------------------------
# Modules


def _conv(cin, cout, k, stride, pad, cfg: EncoderConfig, rngs):
    # Explicit symmetric padding reproduces torch's convolution alignment (SAME would pad
    # asymmetrically for stride 2) so torchvision/DECA weights could be converted one-to-one.
    gemm = cfg.conv_backward == "gemm" and cfg.arch == "resnet50"
    conv_fn = conv_lib.conv_general_dilated if gemm else jax.lax.conv_general_dilated
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=cfg.compute_dtype,
        kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
        conv_general_dilated=conv_fn,
        rngs=rngs,
    )


def _bn(c, cfg: EncoderConfig, rngs):
    return nnx.BatchNorm(
        c, momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, dtype=cfg.compute_dtype, rngs=rngs
    )


class Bottleneck(nnx.Module):
    """torchvision ResNet-v1.5 bottleneck: 1×1 → 3×3 (stride here) → 1×1 (×4), residual."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 1, 1, 0, cfg, rngs)
        self.bn1 = _bn(width, cfg, rngs)
        self.conv2 = _conv(width, width, 3, stride, 1, cfg, rngs)
        self.bn2 = _bn(width, cfg, rngs)
        self.conv3 = _conv(width, cout, 1, 1, 0, cfg, rngs)
        self.bn3 = _bn(cout, cfg, rngs)
        if stride != 1 or cin != cout:
            self.downsample_conv = _conv(cin, cout, 1, stride, 0, cfg, rngs)
            self.downsample_bn = _bn(cout, cfg, rngs)
        else:
            self.downsample_conv = None
            self.downsample_bn = None

    def __call__(self, x, use_running_average: bool):
        ura = use_running_average
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
        y = nnx.relu(self.bn2(self.conv2(y), use_running_average=ura))
        y = self.bn3(self.conv3(y), use_running_average=ura)
        if self.downsample_conv is not None:
            x = self.downsample_bn(self.downsample_conv(x), use_running_average=ura)
        return nnx.relu(x + y)


class BasicBlock(nnx.Module):
    """ResNet basic block: 3×3 (stride) → 3×3, residual (1×1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, stride, 1, cfg, rngs)
        self.bn1 = _bn(cout, cfg, rngs)
        self.conv2 = _conv(cout, cout, 3, 1, 1, cfg, rngs)
        self.bn2 = _bn(cout, cfg, rngs)
        if stride != 1 or cin != cout:
            self.downsample_conv = _conv(cin, cout, 1, stride, 0, cfg, rngs)
            self.downsample_bn = _bn(cout, cfg, rngs)
        else:
            self.downsample_conv = None
            self.downsample_bn = None

    def __call__(self, x, use_running_average: bool):
        ura = use_running_average
        y = nnx.relu(self.bn1(self.conv1(x), use_running_average=ura))
        y = self.bn2(self.conv2(y), use_running_average=ura)
        if self.downsample_conv is not None:
            x = self.downsample_bn(self.downsample_conv(x), use_running_average=ura)
        return nnx.relu(x + y)


class ResNet50(nnx.Module):
    """torchvision-layout ResNet-50 trunk: NHWC images → [B, ``features``] pooled features (4 × the last
    stage width: 2048 at torchvision's widths)."""

    #: stage names in order (the units of ``trainable_stages``) and their parameters' attribute names
    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")
    _stage_attrs = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        w0 = cfg.resnet_widths[0]
        self.conv1 = _conv(3, w0, 7, 2, 3, cfg, rngs)
        self.bn1 = _bn(w0, cfg, rngs)
        self.conv_backward = cfg.conv_backward
        cin = w0
        stages = []
        for width, blocks, stride in zip(cfg.resnet_widths, cfg.resnet_blocks, (1, 2, 2, 2)):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(cin, width, stride if b == 0 else 1, cfg, rngs=rngs))
                cin = width * Bottleneck.expansion
            stages.append(nnx.List(layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.features = cfg.resnet_widths[-1] * Bottleneck.expansion

    def stage_paths(self, i: int) -> tuple[tuple, ...]:
        """Graph paths (relative to this module) of stage ``i``'s parameters."""
        return tuple((a,) for a in self._stage_attrs[i])

    def run_stages(self, x, use_running_average: bool, start: int, stop: int):
        """Stages ``[start, stop)`` on an activation (NHWC); no pooling."""
        for i in range(start, stop):
            if i == 0:
                x = nnx.relu(self.bn1(self.conv1(x), use_running_average=use_running_average))
                # torch pads max-pool input with -inf; reduce_window's padding for max behaves the same.
                if self.conv_backward == "gemm":  # same values; a gradient without select-and-scatter
                    x = conv_lib.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
                else:
                    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
                continue
            for block in (self.layer1, self.layer2, self.layer3, self.layer4)[i - 1]:
                x = block(x, use_running_average)
        return x

    def __call__(self, x, use_running_average: bool):
        return jnp.mean(self.run_stages(x, use_running_average, 0, len(self.stage_names)), axis=(1, 2))


class SmallResNet(nnx.Module):
    """Tiny ResNet for CPU tests and demos: 3×3/2 stem, then one stage per width (stride 2 after the first)."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        w0 = cfg.small_widths[0]
        self.conv1 = _conv(3, w0, 3, 2, 1, cfg, rngs)
        self.bn1 = _bn(w0, cfg, rngs)
        cin = w0
        stages = []
        for i, (width, blocks) in enumerate(zip(cfg.small_widths, cfg.small_blocks)):
            layer = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layer.append(BasicBlock(cin, width, stride, cfg, rngs=rngs))
                cin = width
            stages.append(nnx.List(layer))
        self.stages = nnx.List(stages)
        self.num_features = cin
        self.stage_names = ("stem",) + tuple(f"stage{i + 1}" for i in range(len(cfg.small_widths)))

    def stage_paths(self, i: int) -> tuple[tuple, ...]:
        """Graph paths (relative to this module) of stage ``i``'s parameters."""
        return (("conv1",), ("bn1",)) if i == 0 else (("stages", i - 1),)

    def run_stages(self, x, use_running_average: bool, start: int, stop: int):
        """Stages ``[start, stop)`` on an activation (NHWC); no pooling."""
        for i in range(start, stop):
            if i == 0:
                x = nnx.relu(self.bn1(self.conv1(x), use_running_average=use_running_average))
                continue
            for block in self.stages[i - 1]:
                x = block(x, use_running_average)
        return x

    def __call__(self, x, use_running_average: bool):
        return jnp.mean(self.run_stages(x, use_running_average, 0, len(self.stage_names)), axis=(1, 2))


def _backbone(config: EncoderConfig, rngs: nnx.Rngs) -> tuple[nnx.Module, int]:
    """The configured backbone and its number of pooled features."""
    if config.arch == "resnet50":
        net = ResNet50(config, rngs=rngs)
        return net, net.features
    if config.arch == "mobilenet":
        net = MobileNet(config.small_widths, config.small_blocks, momentum=config.bn_momentum,
                        epsilon=config.bn_epsilon, dtype=config.compute_dtype, rngs=rngs)
        return net, net.num_features
    return SmallResNet(config, rngs=rngs), config.small_widths[-1]


class Encoder(nnx.Module):
    """Backbone → 1024 → ReLU → raw output vector (see ``output_slices``); with
    ``expression_encoder`` a second backbone → 1024 → ReLU → expression replaces its expression slice."""

    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.backbone, feat = _backbone(config, rngs)
        # The head runs in float32 even with a bf16 backbone: it is tiny and sets the output scale.
        self.fc1 = nnx.Linear(feat, config.head_hidden, rngs=rngs)
        bias = initial_output(config)
        final_kw = {}
        if config.zero_init_head:
            final_kw["kernel_init"] = nnx.initializers.zeros_init()
        self.fc2 = nnx.Linear(
            config.head_hidden,
            bias.shape[0],
            bias_init=lambda key, shape, dtype=jnp.float32: jnp.asarray(bias, dtype).reshape(shape),
            rngs=rngs,
            **final_kw,
        )
        if config.expression_encoder:
            self.expr_backbone, feat = _backbone(config, rngs)
            self.expr_fc1 = nnx.Linear(feat, config.head_hidden, rngs=rngs)
            self.expr_fc2 = nnx.Linear(config.head_hidden, config.n_expr, rngs=rngs, **final_kw)
        else:
            self.expr_backbone = self.expr_fc1 = self.expr_fc2 = None
        w = config.small_widths
        # The stride-16 activation is stage 3's output, or the final 1×1's when stage 3 is the last.
        c16 = w[2] if len(w) > 3 else mobilenet_feature_width(w)
        self.landmark_head = LandmarkHead(
            w[1], c16, config.landmark_head, momentum=config.bn_momentum, epsilon=config.bn_epsilon,
            dtype=config.compute_dtype, rngs=rngs) if config.landmark_head else None

    def __call__(self, images: jax.Array, *, use_running_average: bool = True) -> jax.Array:
        """[B, H, W, 3] RGB in [0, 1] → [B, num_outputs] raw outputs (float32).

        ``use_running_average=False`` normalizes with batch statistics and updates the running
        averages in place (training-mode BatchNorm).
        """
        x = self._input(images)
        return self._outputs(self.backbone(x, use_running_average), x, use_running_average)

    def with_landmarks(self, images: jax.Array, *, use_running_average: bool = True, maps: bool = False):
        """``(raw [B, num_outputs], landmarks [B, landmark_head, 2])``: ``__call__``'s outputs and the spatial
        landmark head's points (normalized crop coordinates) from one pass of the backbone; ``maps``: also
        the head's logit maps [B, h, w, landmark_head] (a third element)."""
        if self.landmark_head is None:
            raise ValueError("this encoder has no landmark head (EncoderConfig.landmark_head = 0)")
        x = self._input(images)
        bb, ura = self.backbone, use_running_average
        x8 = bb.run_stages(x, ura, 0, 3)
        x16 = bb.run_stages(x8, ura, 3, 4)
        raw = self._outputs(jnp.mean(bb.run_stages(x16, ura, 4, len(bb.stage_names)), axis=(1, 2)), x, ura)
        logits = self.landmark_head.maps(x8, x16, ura)
        points = soft_argmax(logits)
        return (raw, points, logits) if maps else (raw, points)

    def _input(self, images: jax.Array) -> jax.Array:
        images = jnp.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [B, H, W, 3] (NHWC RGB), got shape {images.shape}")
        return images.astype(self.config.compute_dtype)

    def _outputs(self, pooled: jax.Array, x: jax.Array, use_running_average: bool) -> jax.Array:
        """The raw outputs from the main backbone's pooled features (and, with ``expression_encoder``, the
        expression backbone run on ``x``)."""
        raw = self.fc2(nnx.relu(self.fc1(pooled.astype(jnp.float32))))
        if self.expr_backbone is None:
            return raw
        return self._with_expression(raw, self.expr_backbone(x, use_running_average).astype(jnp.float32))

    def _with_expression(self, raw, expr_feats):
        expression = self.expr_fc2(nnx.relu(self.expr_fc1(expr_feats)))
        return raw.at[:, output_slices(self.config)["expression"]].set(expression)

    def _backbones(self) -> tuple[nnx.Module, ...]:
        return (self.backbone,) if self.expr_backbone is None else (self.backbone, self.expr_backbone)

    def prefix_features(self, images: jax.Array, frozen_stages: int) -> jax.Array:
        """The activation after the first ``frozen_stages`` backbone stages (running BN statistics):
        [B, h, w, c] in the compute dtype; with ``expression_encoder`` both backbones' activations,
        concatenated on the channel axis. ``frozen_stages=0``: the images in the compute dtype."""
        x = jnp.asarray(images).astype(self.config.compute_dtype)
        outs = [bb.run_stages(x, True, 0, frozen_stages) for bb in self._backbones()]
        return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)

    def from_prefix_features(self, feats: jax.Array, frozen_stages: int, *, use_running_average: bool = True):
        """The raw outputs [B, num_outputs] from ``prefix_features(images, frozen_stages)``: the
        remaining stages, the pool and the head(s) (the same operations as ``__call__``)."""
        backbones = self._backbones()
        parts = jnp.split(feats, len(backbones), axis=-1) if len(backbones) > 1 else [feats]
        pooled = []
        for bb, x in zip(backbones, parts):
            y = bb.run_stages(x, use_running_average, frozen_stages, len(bb.stage_names))
            pooled.append(jnp.mean(y, axis=(1, 2)).astype(jnp.float32))
        raw = self.fc2(nnx.relu(self.fc1(pooled[0])))
        return raw if len(pooled) == 1 else self._with_expression(raw, pooled[1])


def init_encoder(config: EncoderConfig, seed: int = 0) -> Encoder:
    """A freshly initialized encoder (mean-face head) from an integer seed."""
    return Encoder(config, rngs=nnx.Rngs(seed))


def with_landmark_head(encoder: Encoder, points: int, seed: int = 0) -> Encoder:
    """A copy of ``encoder`` with a freshly initialized ``points``-point spatial landmark head (every other
    weight and statistic copied); ``encoder`` itself when it already has one of that size."""
    if encoder.config.landmark_head == points:
        return encoder
    if encoder.config.landmark_head:
        raise ValueError(f"the encoder has a {encoder.config.landmark_head}-point landmark head, not {points}")
    new = init_encoder(dataclasses.replace(encoder.config, landmark_head=int(points)), seed)
    old_state = nnx.state(encoder)
    new_state = nnx.state(new)
    flat = dict(nnx.to_flat_state(new_state))
    for path, var in nnx.to_flat_state(old_state):
        if path not in flat:
            raise ValueError(f"{'/'.join(map(str, path))}: not in the encoder with a landmark head")
        flat[path] = var
    nnx.update(new, nnx.from_flat_state(flat))
    return new


# ---------------------------------------------------------------------------------------------------
# Functional core


def batchnorm_paths(model: nnx.Module) -> frozenset[tuple]:
    """Graph paths of every ``nnx.BatchNorm`` inside ``model`` (found by type, not by name)."""
    return frozenset(tuple(path) for path, node in nnx.iter_graph(model) if isinstance(node, nnx.BatchNorm))


def state_paths(state) -> list[tuple]:
    """Paths (tuples of attribute names / indices) of every variable in an ``nnx.State``."""
    flat = nnx.to_flat_state(state) if hasattr(nnx, "to_flat_state") else state.flat_state()
    return [tuple(path) for path, _ in flat]


def stage_names(config: EncoderConfig) -> tuple[str, ...]:
    """The backbone's stages in order, the stem first (``"stem", "layer1", … "layer4"`` for
    ResNet-50; ``"stem", "stage1", …`` for the small one): the units in which a frozen prefix of the
    backbone is counted."""
    if config.arch == "resnet50":
        return ResNet50.stage_names
    if config.arch in ("small", "mobilenet"):  # both take their widths from small_widths
        return ("stem",) + tuple(f"stage{i + 1}" for i in range(len(config.small_widths)))
    raise ValueError(f"the {config.arch!r} backbone does not define stages")


def frozen_stage_paths(model: nnx.Module, frozen_stages: int) -> frozenset[tuple]:
    """Graph paths of the parameters of every backbone's first ``frozen_stages`` stages."""
    if frozen_stages == 0:
        return frozenset()
    out = set()
    backbones = [("backbone", model.backbone)]
    if getattr(model, "expr_backbone", None) is not None:
        backbones.append(("expr_backbone", model.expr_backbone))
    for name, bb in backbones:
        if not hasattr(bb, "run_stages"):
            raise ValueError(f"the {type(bb).__name__} backbone has no stages: it cannot be partly frozen")
        n = len(bb.stage_names)
        if not 0 <= frozen_stages <= n:
            raise ValueError(f"frozen_stages must be in [0, {n}] for this backbone, got {frozen_stages}")
        for i in range(frozen_stages):
            out.update((name,) + p for p in bb.stage_paths(i))
    return frozenset(out)


def trainable_filter(model: nnx.Module, freeze_bn: bool = True, frozen_stages: int = 0):
    """NNX filter selecting the trainable variables: every ``Param``, minus BatchNorm's if frozen,
    minus those of the first ``frozen_stages`` backbone stages."""
    excluded = frozen_stage_paths(model, frozen_stages)
    if freeze_bn:
        excluded = excluded | batchnorm_paths(model)
    if not excluded:
        return nnx.Param

    def not_excluded(path, value):
        path = tuple(path)
        return not any(path[: len(p)] == p for p in excluded)

    return nnx.All(nnx.Param, not_excluded)


def split_params(model: nnx.Module, freeze_bn: bool = True, frozen_stages: int = 0):
    """Splits a model into ``(graphdef, trainable, rest)`` for pure functional use.

    Args:
      model: an ``Encoder`` (any NNX module works).
      freeze_bn: EFT-style frozen BatchNorm: BN scale/bias go to ``rest`` (not trained). Use
        ``apply(..., update_bn_stats=False)`` (running statistics) with it.
      frozen_stages: the parameters of the backbone's first ``frozen_stages`` stages (see
        ``stage_names``) go to ``rest`` too; with frozen BatchNorm their activations are then a
        fixed function of the images (``apply_prefix`` / ``apply_suffix``).

    Returns:
      graphdef: static structure (hashable; close over it or pass it as a static argument).
      trainable: ``nnx.State`` of the variables to optimize (a pytree; hand it to optax).
      rest: ``nnx.State`` of everything else (BatchNorm statistics, and BN scale/bias when frozen).
    """
    return nnx.split(model, trainable_filter(model, freeze_bn, frozen_stages), ...)


def merge_params(graphdef, trainable, rest) -> nnx.Module:
    """Inverse of ``split_params``: a live module (copies nothing the caller keeps using)."""
    return nnx.merge(graphdef, trainable, rest)


def apply(graphdef, trainable, rest, images: jax.Array, *, update_bn_stats: bool = False,
          landmarks: bool | str = False):
    """Pure forward pass; safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

    Args:
      graphdef, trainable, rest: from ``split_params``.
      images: [B, H, W, 3] RGB in [0, 1].
      update_bn_stats: normalize with batch statistics and update the running averages (for
        ``freeze_bn=False`` training). Default: running statistics (frozen BN, evaluation).

      landmarks: also run the spatial landmark head (``Encoder.with_landmarks``): ``raw`` below is then
        the pair ``(raw, landmarks [B, K, 2])``; ``"maps"``: the triple with the head's logit maps.

    Returns:
      raw: [B, num_outputs] float32 when ``update_bn_stats`` is False; otherwise ``(raw, new_rest)``
      with ``new_rest`` structured like ``rest``.
    """
    # copy=True: fresh Variables owned by the current trace, so BatchNorm may update its
    # statistics under jax.grad (reused Variables belong to an outer trace).
    model = nnx.merge(graphdef, trainable, rest, copy=update_bn_stats)
    if landmarks:
        raw = model.with_landmarks(images, use_running_average=not update_bn_stats, maps=landmarks == "maps")
    else:
        raw = model(images, use_running_average=not update_bn_stats)
    if not update_bn_stats:
        return raw
    trainable_paths = frozenset(state_paths(trainable))
    _, _, new_rest = nnx.split(model, lambda path, v: tuple(path) in trainable_paths, ...)
    return raw, new_rest


def apply_prefix(graphdef, trainable, rest, images: jax.Array, frozen_stages: int) -> jax.Array:
    """The fixed part of the forward pass: the activation after the first ``frozen_stages``
    backbone stages (running BatchNorm statistics), ``Encoder.prefix_features``."""
    return nnx.merge(graphdef, trainable, rest).prefix_features(images, frozen_stages)


def apply_suffix(graphdef, trainable, rest, features: jax.Array, frozen_stages: int) -> jax.Array:
    """The rest of the forward pass from ``apply_prefix``'s output: [B, num_outputs] raw outputs,
    equal to ``apply`` on the images (running BatchNorm statistics)."""
    return nnx.merge(graphdef, trainable, rest).from_prefix_features(features, frozen_stages)


def prefix_feature_shape(config: EncoderConfig, frozen_stages: int, image_size: int | None = None) -> tuple:
    """Per-image shape ``(h, w, c)`` of ``apply_prefix``'s output (computed abstractly, no weights)."""
    size = config.image_size if image_size is None else int(image_size)

    def run():
        model = Encoder(config, rngs=nnx.Rngs(0))
        return model.prefix_features(jnp.zeros((1, size, size, 3)), frozen_stages)

    return tuple(jax.eval_shape(run).shape[1:])


# ---------------------------------------------------------------------------------------------------
# Checkpoints


def _to_pure_dict(state) -> dict:
    return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def _full_state(model_or_state) -> nnx.State:
    if isinstance(model_or_state, nnx.Module):
        return nnx.state(model_or_state)
    if isinstance(model_or_state, (tuple, list)):
        return nnx.merge_state(*model_or_state)
    if isinstance(model_or_state, nnx.State):
        return model_or_state
    raise TypeError(
        "save_encoder expects an nnx.Module, an nnx.State or a (trainable, rest) tuple of States, "
        f"got {type(model_or_state).__name__}"
    )


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flat_arrays(tree) -> dict[str, np.ndarray]:
    """``{"backbone/conv1/kernel": array, ...}`` of a pure-dict state (host copies)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): np.asarray(leaf) for path, leaf in leaves}


def _array_digest(a: np.ndarray) -> str:
    """SHA-256 of the array's dtype, shape and C-order little-endian bytes (the same on any host)."""
    a = np.asarray(a)
    dt = a.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):
        a = a.astype(dt.newbyteorder("<"))
    h = hashlib.sha256(f"{dt.kind}{dt.itemsize}{list(a.shape)}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def array_checksums(state) -> dict[str, str]:
    """Per-array SHA-256 digests of a pure-dict encoder state (what a checkpoint records)."""
    return {name: _array_digest(a) for name, a in _flat_arrays(state).items()}


def save_encoder(path, model_or_state, config: EncoderConfig, *, overwrite: bool = False) -> None:
    """Saves an encoder's weights (orbax) and its config (JSON metadata) to the directory ``path``.

    The metadata also records a SHA-256 checksum of every array, checked by ``load_encoder``
    (orbax data can be corrupted without any error when it is read back).

    Args:
      path: checkpoint directory (created; must not exist unless ``overwrite``).
      model_or_state: the ``Encoder``, its full ``nnx.State``, or ``(trainable, rest)`` from
        ``split_params``.
      config: the ``EncoderConfig`` the weights belong to.
      overwrite: replace an existing checkpoint at ``path``.
    """
    import orbax.checkpoint as ocp  # lazy: a slow import, needed only to save or load weights

    state = _to_pure_dict(_full_state(model_or_state))
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "version": _CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "checksums": {"algorithm": _CHECKSUM_ALGORITHM, "arrays": array_checksums(state)},
    }
    path = os.path.abspath(os.fspath(path))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(meta)),
            force=overwrite,
        )


def _checkpoint_config(ckptr, ocp, path: str) -> tuple[EncoderConfig, dict]:
    """Reads and validates the checkpoint's JSON metadata: ``(config, meta)``; errors name ``path``."""
    if not os.path.isdir(os.path.join(path, "config")):
        raise ValueError(f"{path}: not a complete encoder checkpoint (no config/ metadata directory)")
    try:
        meta = ckptr.restore(path, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except Exception as e:  # orbax raises assorted errors for unreadable metadata
        raise ValueError(f"{path}: cannot read the encoder checkpoint's metadata ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a neuface_jax encoder checkpoint (metadata: {json.dumps(meta)[:200]})")
    if meta.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported encoder checkpoint version {meta.get('version')}")
    if "config" not in meta:
        raise ValueError(f"{path}: the encoder checkpoint's metadata has no config")
    try:
        return EncoderConfig.from_dict(meta["config"]), meta
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: invalid encoder config ({e})") from None


def verify_arrays(path: str, meta: dict, state) -> None:
    """Checks restored arrays against the checksums recorded at save, then their finiteness.

    A checkpoint saved without checksums (before they were recorded) loads with a warning that its
    weights are unverified; non-finite weights are an error either way.
    """
    arrays = _flat_arrays(state)
    recorded = meta.get("checksums")
    if recorded is None:
        _log.warning("%s: saved without checksums: its weights are unverified (only checked to be finite)", path)
    else:
        expected = recorded.get("arrays") if isinstance(recorded, dict) else None
        if not isinstance(expected, dict) or recorded.get("algorithm") != _CHECKSUM_ALGORITHM:
            raise ValueError(f"{path}: unreadable checksum block in the encoder checkpoint's metadata")
        if set(expected) != set(arrays):
            raise ValueError(f"{path}: the checksums name other arrays than the checkpoint holds")
        bad = sorted(name for name, a in arrays.items() if _array_digest(a) != expected[name])
        if bad:
            raise ValueError(
                f"{path}: corrupted encoder checkpoint: {len(bad)} array(s) differ from the checksums "
                f"recorded at save ({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})"
            )
    nonfinite = sorted(n for n, a in arrays.items() if a.dtype.kind in "fc" and not np.isfinite(a).all())
    if nonfinite:
        raise ValueError(f"{path}: non-finite encoder weights in {', '.join(nonfinite[:5])}")


def load_encoder(path) -> tuple[Encoder, EncoderConfig]:
    """Restores ``(model, config)`` saved by ``save_encoder``.

    The config is validated (bounded ranges, errors naming the checkpoint) before anything is
    built; the arrays are restored into an abstract target built with ``nnx.eval_shape`` (no weights
    are initialized only to be overwritten), so a mismatch between config and weights is an error;
    then they are checked against the recorded checksums and for finiteness (``verify_arrays``).
    """
    import orbax.checkpoint as ocp  # lazy: a slow import, needed only to save or load weights

    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no encoder checkpoint directory at {path}")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        config, meta = _checkpoint_config(ckptr, ocp, path)
        abstract = nnx.eval_shape(lambda: Encoder(config, rngs=nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract)
        # Explicit target shardings (this process's first device): a checkpoint saved on a CPU
        # loads on a GPU/TPU host and vice versa, whatever device its metadata names.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), _to_pure_dict(abstract_state)
        )
        if not os.path.isdir(os.path.join(path, "state")):
            raise ValueError(f"{path}: not a complete encoder checkpoint (no state/ weights directory)")
        try:
            restored = ckptr.restore(path, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        except Exception as e:  # orbax/tensorstore raise assorted errors for unreadable data
            raise ValueError(f"{path}: cannot read the encoder weights ({type(e).__name__}: {e})") from None
    verify_arrays(path, meta, restored)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state), config
