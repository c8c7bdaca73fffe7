"""A MobileNetV2-style backbone (Flax NNX) for real-time regression from small face crops.

Inverted residual blocks: a 1×1 expansion (×``expansion``), a 3×3 depthwise convolution (the stride
lives here), a linear 1×1 projection, and a residual connection when the shape is unchanged;
BatchNorm after every convolution, ReLU6 after the first two. A 3×3/2 stem comes first and a 1×1
convolution to ``feature_width`` channels last; the features are globally average-pooled, so any
crop size works (96–128 pixels is the intended range).

Each stage ``i`` has ``widths[i]`` output channels and ``blocks[i]`` blocks, the first with stride 2,
so a 96-pixel crop is 3×3 after a stem and four stages. The layout is configured through
``EncoderConfig.small_widths`` / ``small_blocks`` when ``EncoderConfig.arch == "mobilenet"``; this
module takes plain numbers so that ``core.encoder`` can build it without a circular import.

Batch 1 is what a live tracker runs: the 1×1 convolutions are matrix products over the channel axis
and the depthwise 3×3 is nine shifted multiply-adds (``depthwise_conv3x3``), forms XLA:CPU runs
fast at batch 1. ``run_stages`` / ``stage_paths`` / ``stage_names`` follow the other backbones'
stage interface, so a prefix of the network can be frozen.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "DEFAULT_EXPANSION", "DepthwiseConv", "InvertedResidual", "LandmarkHead", "MobileNet", "depthwise_conv3x3",
    "feature_width", "heatmap_cross_entropy", "soft_argmax",
]

#: Channel expansion of the inverted residual blocks (MobileNetV2 uses 6; 4 is cheaper at batch 1).
DEFAULT_EXPANSION = 4


def feature_width(widths) -> int:
    """Channels of the final 1×1 convolution (the pooled feature size): 4 × the last stage width."""
    return 4 * int(widths[-1])


def _stem(cout, dtype, rngs):
    return nnx.Conv(
        3, cout, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False, dtype=dtype,
        kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"), rngs=rngs,
    )


def _pointwise(cin, cout, dtype, rngs):
    # A 1×1 convolution is a matrix product over the channel axis (a Linear on NHWC).
    return nnx.Linear(cin, cout, use_bias=False, dtype=dtype,
                      kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"), rngs=rngs)


def depthwise_conv3x3(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """3×3 depthwise convolution (zero padding 1) as nine shifted multiply-adds.

    Same result as ``lax.conv_general_dilated`` with ``feature_group_count=C``, but XLA:CPU fuses
    the shifted products into one elementwise loop, where its grouped convolution runs a slow
    generic kernel (tens of times slower at batch 1).

    Args:
      x: [B, H, W, C].
      kernel: [3, 3, C].
      stride: 1 or 2.
    """
    h, w = x.shape[1], x.shape[2]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(3):
        for j in range(3):
            tap = xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :] * kernel[i, j]
            out = tap if out is None else out + tap
    return out


class DepthwiseConv(nnx.Module):
    """3×3 depthwise convolution with a ``[3, 3, C]`` kernel (see ``depthwise_conv3x3``)."""

    def __init__(self, channels: int, stride: int, *, dtype, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=(0, 1), out_axis=2)
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, channels), jnp.float32))
        self.stride = int(stride)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        return depthwise_conv3x3(x, self.kernel[...].astype(self.dtype), self.stride)


def _bn(c, momentum, epsilon, dtype, rngs):
    return nnx.BatchNorm(c, momentum=momentum, epsilon=epsilon, dtype=dtype, rngs=rngs)


def _relu6(x):
    return jnp.clip(x, 0.0, 6.0)


class InvertedResidual(nnx.Module):
    """1×1 expand → ReLU6 → 3×3 depthwise (stride) → ReLU6 → 1×1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, *, momentum: float, epsilon: float,
                 dtype, rngs: nnx.Rngs):
        hidden = cin * expansion
        self.expand = _pointwise(cin, hidden, dtype, rngs) if expansion != 1 else None
        self.expand_bn = _bn(hidden, momentum, epsilon, dtype, rngs) if expansion != 1 else None
        self.depthwise = DepthwiseConv(hidden, stride, dtype=dtype, rngs=rngs)
        self.depthwise_bn = _bn(hidden, momentum, epsilon, dtype, rngs)
        self.project = _pointwise(hidden, cout, dtype, rngs)
        self.project_bn = _bn(cout, momentum, epsilon, dtype, rngs)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x, use_running_average: bool):
        ura = use_running_average
        y = x
        if self.expand is not None:
            y = _relu6(self.expand_bn(self.expand(y), use_running_average=ura))
        y = _relu6(self.depthwise_bn(self.depthwise(y), use_running_average=ura))
        y = self.project_bn(self.project(y), use_running_average=ura)
        return x + y if self.residual else y


class MobileNet(nnx.Module):
    """Stem 3×3/2 → inverted-residual stages (first block of each with stride 2) → 1×1 → global pool.

    Args:
      widths: output channels per stage (the stem has ``widths[0]``).
      blocks: inverted residual blocks per stage (0 skips a stage's blocks).
      expansion: channel expansion inside the blocks.
      momentum, epsilon: BatchNorm settings.
      dtype: compute dtype.

    ``num_features`` is the pooled feature size (``feature_width(widths)``).
    """

    def __init__(self, widths, blocks, *, expansion: int = DEFAULT_EXPANSION, momentum: float = 0.9,
                 epsilon: float = 1e-5, dtype=jnp.float32, rngs: nnx.Rngs):
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} must be non-empty and of equal length")
        kw = dict(momentum=momentum, epsilon=epsilon, dtype=dtype)
        w0 = int(widths[0])
        self.stem = _stem(w0, dtype, rngs)
        self.stem_bn = _bn(w0, momentum, epsilon, dtype, rngs)
        cin = w0
        stages = []
        for width, n in zip(widths, blocks):
            layer = []
            for b in range(int(n)):
                # The stem already halves the crop; the first stage's first block halves it again.
                layer.append(InvertedResidual(cin, int(width), 2 if b == 0 else 1, expansion, rngs=rngs, **kw))
                cin = int(width)
            stages.append(nnx.List(layer))
        self.stages = nnx.List(stages)
        self.num_features = feature_width(widths)
        self.last = _pointwise(cin, self.num_features, dtype, rngs)
        self.last_bn = _bn(self.num_features, momentum, epsilon, dtype, rngs)
        # The final 1×1 convolution belongs to the last stage (a frozen prefix never ends between them).
        self.stage_names = ("stem",) + tuple(f"stage{i + 1}" for i in range(len(widths)))

    def stage_paths(self, i: int) -> tuple[tuple, ...]:
        """Graph paths (relative to this module) of stage ``i``'s parameters (0 = the stem)."""
        if i == 0:
            return (("stem",), ("stem_bn",))
        paths = (("stages", i - 1),)
        return paths + (("last",), ("last_bn",)) if i == len(self.stage_names) - 1 else paths

    def run_stages(self, x: jax.Array, use_running_average: bool, start: int, stop: int) -> jax.Array:
        """Stages ``[start, stop)`` on an NHWC activation (no pooling)."""
        ura = use_running_average
        last = len(self.stage_names) - 1
        for i in range(start, stop):
            if i == 0:
                x = _relu6(self.stem_bn(self.stem(x), use_running_average=ura))
                continue
            for block in self.stages[i - 1]:
                x = block(x, ura)
            if i == last:
                x = _relu6(self.last_bn(self.last(x), use_running_average=ura))
        return x

    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        """[B, H, W, 3] → [B, num_features] pooled features."""
        return jnp.mean(self.run_stages(x, use_running_average, 0, len(self.stage_names)), axis=(1, 2))


def soft_argmax(logits: jax.Array) -> jax.Array:
    """[B, h, w, K] per-point logits → [B, K, 2] expected (x, y) over the grid's cell centres, in normalized
    crop coordinates (``media.crops.to_normalized``: the crop spans −1…1; cell ``j`` of ``w`` is centred at
    ``(j + ½)/w · 2 − 1``). The softmax runs in float32."""
    b, h, w, k = logits.shape
    prob = jax.nn.softmax(logits.astype(jnp.float32).reshape(b, h * w, k), axis=1)
    ys, xs = jnp.meshgrid((jnp.arange(h) + 0.5) / h * 2.0 - 1.0, (jnp.arange(w) + 0.5) / w * 2.0 - 1.0, indexing="ij")
    grid = jnp.stack([xs.ravel(), ys.ravel()], -1)  # [h·w, 2]
    return jnp.einsum("bpk,pc->bkc", prob, grid)


class LandmarkHead(nnx.Module):
    """Spatial 2D landmark head: the stride-8 activation with the stride-16 one upsampled beside it →
    1×1 (``hidden``) → ReLU6 → 3×3 depthwise → ReLU6 → 1×1 to one logit map per point → ``soft_argmax``.

    Unlike the parameter head behind the global pool, every point is read where it shows in the crop, so
    a face turned further than any training face still places its points by what is under them.
    """

    def __init__(self, c8: int, c16: int, points: int, hidden: int = 64, *, momentum: float = 0.9,
                 epsilon: float = 1e-5, dtype=jnp.float32, rngs: nnx.Rngs):
        self.lateral = _pointwise(c8 + c16, hidden, dtype, rngs)
        self.lateral_bn = _bn(hidden, momentum, epsilon, dtype, rngs)
        self.depthwise = DepthwiseConv(hidden, 1, dtype=dtype, rngs=rngs)
        self.depthwise_bn = _bn(hidden, momentum, epsilon, dtype, rngs)
        # Zero-initialized logits: every point starts at the crop's centre (uniform maps).
        self.logits = nnx.Linear(hidden, int(points), kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def maps(self, x8: jax.Array, x16: jax.Array, use_running_average: bool) -> jax.Array:
        """[B, h, w, c8] and [B, ⌈h/2⌉, ⌈w/2⌉, c16] → [B, h, w, points] float32 logit maps."""
        ura = use_running_average
        up = jnp.repeat(jnp.repeat(x16, 2, axis=1), 2, axis=2)[:, : x8.shape[1], : x8.shape[2]]
        y = jnp.concatenate([x8, up.astype(x8.dtype)], axis=-1)
        y = _relu6(self.lateral_bn(self.lateral(y), use_running_average=ura))
        y = _relu6(self.depthwise_bn(self.depthwise(y), use_running_average=ura))
        return self.logits(y.astype(jnp.float32))

    def __call__(self, x8: jax.Array, x16: jax.Array, use_running_average: bool) -> jax.Array:
        """[B, h, w, c8] and [B, ⌈h/2⌉, ⌈w/2⌉, c16] → [B, points, 2] normalized crop coordinates."""
        return soft_argmax(self.maps(x8, x16, use_running_average))


def heatmap_cross_entropy(logits: jax.Array, points: jax.Array, sigma_cells: float = 1.0) -> jax.Array:
    """[B, K] cross-entropy of each point's softmax map (logits [B, h, w, K]) against a normalized Gaussian of
    ``sigma_cells`` cells centred at its target (points [B, K, 2], normalized crop coordinates). Without it
    the soft-argmax is free to spread a map over the whole crop and average (a global regression in
    disguise); with it each map peaks where its point shows."""
    b, h, w, k = logits.shape
    logp = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(b, h * w, k), axis=1)
    cy, cx = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    tx = (points[..., 0] + 1.0) * 0.5 * w  # [B, K] in cells
    ty = (points[..., 1] + 1.0) * 0.5 * h
    d2 = (cx.ravel()[None, :, None] - tx[:, None, :]) ** 2 + (cy.ravel()[None, :, None] - ty[:, None, :]) ** 2
    q = jax.nn.softmax(-0.5 * d2 / sigma_cells**2, axis=1)  # [B, h·w, K]
    return -jnp.sum(q * logp, axis=1)
