"""Convolution and max-pool gradients in forms XLA:CPU runs fast (the ResNet-50 update's backward).

The forward is ``lax.conv_general_dilated`` itself (NHWC input, HWIO kernel, explicit padding), so
outputs are those of ``nnx.Conv``. Only the derivative is reformulated, through ``jax.custom_vjp``:

* **Kernel gradient** as matrix products over batch × output pixels, one per kernel tap: a strided
  slice of the padded input flattened to ``(N·Ho·Wo, Cin)`` times the flattened output gradient
  (``"taps"``). XLA's own transpose is a convolution whose window is the whole output image; to run
  it XLA:CPU first copies activations into ``[C, H, W, N]`` layouts, fused with the BatchNorm/ReLU
  recomputation into cache-missing strided loops that cost more than the arithmetic. Given 2-D
  operands, the dot takes the transposed operand as is. Kept for comparison: ``"taps4d"`` (the same
  products as 4-D contractions, which bring the copies back), ``"im2col"`` (the slices concatenated
  into one product, k² times the input's memory) and ``"lax"``.
* **Input gradient** of a stride-s convolution as one stride-1 convolution per output phase
  (``"polyphase"``): pixel ``s·a + r`` of the padded input receives only the taps ``r, r+s, …``, so
  each of the s² phases is a small stride-1 convolution of the output gradient with the flipped
  sub-kernel, and the phases interleave back (depth-to-space), instead of XLA's convolution over a
  zero-dilated gradient. For s = 1 it is the usual flipped-kernel convolution; 1×1 convolutions use
  a matrix product (and a strided scatter for s > 1).
* **Max-pool** (``max_pool``): the gradient reaches the first maximum of each window, as XLA's
  select-and-scatter does, through per-offset compares and interior-padded scatters.

The gradients are the same sums as the textbook transposes in another order (float rounding
differs at the 1e-6 relative level). ``conv_general_dilated`` is a drop-in for
``nnx.Conv(conv_general_dilated=...)``: parameters keep their layout and values. Both it and
``max_pool`` apply the reformulation only when tracing for CPU.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

#: Weight-gradient formulations: XLA's own transpose, per-tap GEMMs, one im2col GEMM.
DW_MODES = ("lax", "taps", "im2col", "taps4d")
#: Input-gradient formulations: XLA's own transpose, per-phase stride-1 convolutions.
DX_MODES = ("lax", "polyphase")
#: Convolutions over fewer input channels (the RGB stem) keep XLA's own gradients: their kernel
#: gradient is a thin (k²·Cin × Cout) product that XLA's transpose computes faster than per-tap GEMMs,
#: and their input gradient is not needed in training.
MIN_GEMM_CHANNELS = 4
_DN = ("NHWC", "HWIO", "NHWC")


def on_cpu() -> bool:
    """Whether traced code targets XLA:CPU, the backend these formulations are for (on GPU/TPU the
    convolution libraries' own backward kernels are the fast ones)."""
    return jax.default_backend() == "cpu"


def _forward(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DN)


def _tap(xpad, kh: int, kw: int, ho: int, wo: int, strides):
    """Input pixels that kernel tap (kh, kw) multiplies, one per output pixel: (N, Ho, Wo, Cin)."""
    sh, sw = strides
    n, _, _, c = xpad.shape
    return lax.slice(xpad, (0, kh, kw, 0), (n, kh + sh * (ho - 1) + 1, kw + sw * (wo - 1) + 1, c), (1, sh, sw, 1))


def kernel_grad(x, dy, kernel_shape, strides, padding, mode: str = "taps"):
    """d(sum(conv(x, w) * dy)) / dw as GEMMs over the batch and output pixels: (kh, kw, Cin, Cout).

    ``"taps"`` flattens each tap's pixels to a (N·Ho·Wo, Cin) matrix first: XLA:CPU then runs the
    product with the transposed operand as is, where the 4-D contraction (``"taps4d"``) makes it
    copy the activation into a transposed layout first, a slow strided loop.
    """
    kh_n, kw_n, cin, cout = kernel_shape
    _, ho, wo, _ = dy.shape
    xpad = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    taps = [(i, j) for i in range(kh_n) for j in range(kw_n)]
    dims = (((0, 1, 2), (0, 1, 2)), ((), ()))
    m = dy.shape[0] * ho * wo
    if mode == "im2col" and len(taps) > 1:
        cols = jnp.concatenate([_tap(xpad, i, j, ho, wo, strides) for i, j in taps], axis=-1)
        dw = lax.dot_general(cols.reshape(m, len(taps) * cin), dy.reshape(m, cout), (((0,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)
        return dw.reshape(kh_n, kw_n, cin, cout)
    if mode == "taps4d":
        dws = [lax.dot_general(_tap(xpad, i, j, ho, wo, strides), dy, dims, preferred_element_type=jnp.float32)
               for i, j in taps]
    else:
        d = dy.reshape(m, cout)
        dws = [lax.dot_general(_tap(xpad, i, j, ho, wo, strides).reshape(m, cin), d, (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32) for i, j in taps]
    return jnp.stack(dws).reshape(kh_n, kw_n, cin, cout)


def input_grad(dy, w, input_hw, strides, padding):
    """d(sum(conv(x, w) * dy)) / dx with stride-1 convolutions only: (N, H, W, Cin)."""
    kh_n, kw_n, cin, cout = w.shape
    n, ho, wo, _ = dy.shape
    h, wd = input_hw
    sh, sw = strides
    (ph, ph_hi), (pw, pw_hi) = padding
    if kh_n == 1 and kw_n == 1:
        g = lax.dot_general(dy, w[0, 0], (((3,), (1,)), ((), ())))  # (N, Ho, Wo, Cin)
        # Output pixel (a, b) read input pixel (s·a − p, s·b − p): scatter back with interior zeros.
        cfg = [(0, 0, 0), (-ph, h + ph - (sh * (ho - 1) + 1), sh - 1), (-pw, wd + pw - (sw * (wo - 1) + 1), sw - 1),
               (0, 0, 0)]
        return lax.pad(g, jnp.zeros((), g.dtype), cfg)
    # Padded input row s·a + r gets taps r, r + s, …: a stride-1 "full" correlation per phase r.
    hp, wp = h + ph + ph_hi, wd + pw + pw_hi
    ah, aw = -(-hp // sh), -(-wp // sw)  # rows / columns per phase
    phases = []
    for ry in range(sh):
        row = []
        for rx in range(sw):
            sub = w[ry::sh, rx::sw]  # taps of this phase, (My, Mx, Cin, Cout)
            my, mx = sub.shape[0], sub.shape[1]
            if my == 0 or mx == 0:
                row.append(jnp.zeros((n, ah, aw, cin), dy.dtype))
                continue
            k = jnp.swapaxes(sub[::-1, ::-1], 2, 3)  # flipped, (My, Mx, Cout, Cin)
            row.append(lax.conv_general_dilated(dy, k, (1, 1), ((my - 1, ah - ho), (mx - 1, aw - wo)),
                                                dimension_numbers=_DN))
        phases.append(jnp.stack(row, axis=3))  # (N, Ah, Aw, sx, Cin)
    z = jnp.stack(phases, axis=2)  # (N, Ah, sy, Aw, sx, Cin)
    dxpad = z.reshape(n, ah * sh, aw * sw, cin)
    return dxpad[:, ph:ph + h, pw:pw + wd]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv2d(x, w, strides: tuple[int, int], padding: tuple, dw_mode: str = "taps", dx_mode: str = "polyphase"):
    """``lax.conv_general_dilated(x, w, strides, padding)`` (NHWC, HWIO) with a GEMM-based backward."""
    return _forward(x, w, strides, padding)


def _conv2d_fwd(x, w, strides, padding, dw_mode, dx_mode):
    return _forward(x, w, strides, padding), (x, w)


def _conv2d_bwd(strides, padding, dw_mode, dx_mode, res, dy):
    x, w = res
    if dw_mode == "lax" or dx_mode == "lax":
        _, vjp = jax.vjp(lambda x_, w_: _forward(x_, w_, strides, padding), x, w)
        dx_lax, dw_lax = vjp(dy)
    dw = dw_lax if dw_mode == "lax" else kernel_grad(x, dy, w.shape, strides, padding, dw_mode).astype(w.dtype)
    dx = dx_lax if dx_mode == "lax" else input_grad(dy, w, x.shape[1:3], strides, padding).astype(x.dtype)
    return dx, dw


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _normalized(strides, padding, nd: int):
    strides = tuple(int(s) for s in (strides if isinstance(strides, Sequence) else (strides,) * nd))
    if isinstance(padding, str):
        return strides, None
    return strides, tuple((int(lo), int(hi)) for lo, hi in padding)


@functools.lru_cache(maxsize=None)
def make_conv_general_dilated(dw_mode: str = "taps", dx_mode: str = "polyphase"):
    """A ``lax.conv_general_dilated`` replacement for ``nnx.Conv`` that routes, on CPU, 2-D NHWC/HWIO
    convolutions without dilation or groups, over at least ``MIN_GEMM_CHANNELS`` input channels,
    through ``conv2d`` (everything else goes to lax).

    One function object per mode pair (cached): it is part of a module's static graph, so models
    built separately must share it to share compiled code."""
    if dw_mode not in DW_MODES:
        raise ValueError(f"dw_mode must be one of {DW_MODES}, got {dw_mode!r}")
    if dx_mode not in DX_MODES:
        raise ValueError(f"dx_mode must be one of {DX_MODES}, got {dx_mode!r}")

    def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                             dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
        strides, pads = _normalized(window_strides, padding, lhs.ndim - 2)
        plain = (on_cpu() and lhs.ndim == 4 and pads is not None and feature_group_count == 1 and precision is None
                 and rhs.shape[-2] >= MIN_GEMM_CHANNELS
                 and not any(v is not None for v in kwargs.values())
                 and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
                 and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
                 == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN))
        if not plain:
            return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)
        return conv2d(lhs, rhs, strides, pads, dw_mode, dx_mode)

    return conv_general_dilated


#: The default replacement (per-tap GEMM kernel gradients, polyphase input gradients).
conv_general_dilated = make_conv_general_dilated("taps", "polyphase")


def max_pool(x, window: tuple[int, int], strides: tuple[int, int], padding: tuple):
    """``nnx.max_pool`` (NHWC, padding with -inf) whose gradient, on CPU, avoids XLA:CPU's
    select-and-scatter.

    The gradient goes, as XLA's does, to the first maximum of each window in row-major order; it is
    formed per window offset with compares and interior-padded (strided) scatters, all elementwise.
    On other backends this is the plain ``reduce_window`` and its own gradient.
    """
    if not on_cpu():
        return _max_pool(x, window, strides, padding)
    return _max_pool_cpu(x, window, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_cpu(x, window, strides, padding):
    return _max_pool(x, window, strides, padding)


def _max_pool(x, window, strides, padding):
    init = jnp.array(-jnp.inf, x.dtype)
    return lax.reduce_window(x, init, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *padding, (0, 0)))


def _max_pool_fwd(x, window, strides, padding):
    y = _max_pool(x, window, strides, padding)
    return y, (x, y)


def _max_pool_bwd(window, strides, padding, res, dy):
    x, y = res
    n, h, w, c = x.shape
    _, ho, wo, _ = y.shape
    (ph, ph_hi), (pw, pw_hi) = padding
    xpad = jnp.pad(x, ((0, 0), (ph, ph_hi), (pw, pw_hi), (0, 0)), constant_values=-jnp.inf)
    hp, wp = xpad.shape[1:3]
    taken = jnp.zeros(y.shape, bool)
    zero = jnp.zeros((), dy.dtype)
    dxpad = jnp.zeros(xpad.shape, dy.dtype)
    for i in range(window[0]):
        for j in range(window[1]):
            first = (_tap(xpad, i, j, ho, wo, strides) == y) & ~taken
            taken = taken | first
            g = jnp.where(first, dy, zero)
            # Window offset (i, j) of output pixel (a, b) is padded pixel (s·a + i, s·b + j).
            dxpad = dxpad + lax.pad(g, zero, ((0, 0, 0), (i, hp - i - (strides[0] * (ho - 1) + 1), strides[0] - 1),
                                              (j, wp - j - (strides[1] * (wo - 1) + 1), strides[1] - 1), (0, 0, 0)))
    return (dxpad[:, ph:ph + h, pw:pw + w],)


_max_pool_cpu.defvjp(_max_pool_fwd, _max_pool_bwd)
