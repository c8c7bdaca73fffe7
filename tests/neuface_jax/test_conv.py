"""The reformulated convolution backward (``core.conv``) computes XLA's own gradients: per kernel size,
stride and padding of ResNet-50, and through a whole (tiny) ResNet-50 encoder, whose parameters and
forward stay those of the XLA path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from flax import nnx

from neuface_jax.core import conv
from neuface_jax.core import encoder as enc

from .test_trainable_stages import TINY_RESNET  # widths 4 = conv.MIN_GEMM_CHANNELS: all but the stem take GEMMs
_DN = ("NHWC", "HWIO", "NHWC")

# (kernel, stride, padding, input side) of ResNet-50's bottlenecks: 3×3/1, 3×3/2 and the 1×1/2
# projection, odd and even sides (the stride-2 phases differ in length); the 7×7/2 stem (which keeps
# XLA's gradients in the encoder, see conv.MIN_GEMM_CHANNELS) in the long run.
_CASES = [(3, 1, 1, 9), (3, 2, 1, 10), (3, 2, 1, 9), (1, 2, 0, 10), (1, 2, 0, 9)]  # 1×1/1: the encoder test
_STEM_CASES = [(7, 2, 3, 18), (7, 2, 3, 17)]


def _rel(a, b):
    return jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))


def _errors(key, cases, modes):
    """Max relative errors of (output, input gradient, kernel gradient) of conv2d against lax, per case
    and (kernel-gradient, input-gradient) mode: [cases, modes, 3]. Inputs derive from ``key``, an
    argument, so that XLA cannot constant-fold the whole check."""
    out = []
    for i, (k, s, p, h) in enumerate(cases):
        cin, cout = (3, 5) if k == 7 else (8, 5)
        kx, kw, kd = jax.random.split(jax.random.fold_in(key, i), 3)
        x = jax.random.normal(kx, (2, h, h + 1, cin))  # non-square: rows and columns are handled apart
        w = jax.random.normal(kw, (k, k, cin, cout))
        pad = ((p, p), (p, p))
        y_ref, vjp_ref = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=_DN), x, w)
        dy = jax.random.normal(kd, y_ref.shape)
        gx_ref, gw_ref = vjp_ref(dy)
        for dw_mode, dx_mode in modes:
            y, vjp = jax.vjp(lambda x, w: conv.conv2d(x, w, (s, s), pad, dw_mode, dx_mode), x, w)
            gx, gw = vjp(dy)
            assert gx.shape == x.shape and gw.shape == w.shape
            out.append(jnp.stack([_rel(y, y_ref), _rel(gx, gx_ref), _rel(gw, gw_ref)]))
    return jnp.stack(out).reshape(len(cases), len(modes), 3)


def _check(cases, modes):
    err = np.asarray(jax.jit(_errors, static_argnums=(1, 2))(jax.random.key(0), tuple(cases), tuple(modes)))
    bad = [(cases[i], modes[j], err[i, j].tolist()) for i in range(len(cases)) for j in range(len(modes))
           if not (err[i, j] < 1e-5).all()]
    assert not bad, bad
    assert (err[..., 0] < 1e-6).all()  # the forward is lax's own convolution


def test_conv2d_outputs_and_gradients_equal_lax():
    _check(_CASES, [("taps", "polyphase")])


@pytest.mark.long
def test_conv2d_every_mode_and_the_stem_equal_lax():
    modes = [("taps", "polyphase"), ("im2col", "polyphase"), ("taps4d", "polyphase"), ("lax", "polyphase"),
             ("taps", "lax")]
    _check(_CASES + _STEM_CASES, modes)


def test_max_pool_gradient_equals_select_and_scatter_with_ties():
    def grads(x, dy):
        ref = lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        new = lambda x: conv.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        (y_ref, vjp_ref), (y, vjp) = jax.vjp(ref, x), jax.vjp(new, x)
        return y, y_ref, vjp(dy)[0], vjp_ref(dy)[0]

    h = 10  # rows even (the last window hangs over the padding), columns odd
    x = jax.nn.relu(jax.random.normal(jax.random.key(h), (2, h, h + 1, 3)))  # zeros tie in many windows
    x = x.at[0, 2:5, 2:5, 0].set(1.0)  # a plateau: equal maxima shared by overlapping windows
    dy = jax.random.normal(jax.random.key(1), (2, (h + 1) // 2, (h + 2) // 2, 3))
    y, y_ref, g, g_ref = jax.jit(grads)(x, dy)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    # The same window element receives each gradient (a tie sent elsewhere would differ by O(1)).
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=0, atol=1e-6)


def test_conv_general_dilated_routes_only_plain_convolutions():
    f = conv.make_conv_general_dilated("taps", "polyphase")
    assert f is conv.conv_general_dilated and conv.make_conv_general_dilated("lax", "lax") is not f
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 16))
    w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))
    # Grouped and dilated convolutions are lax's own (same values, same gradients).
    for kw in (dict(feature_group_count=2), dict(rhs_dilation=(2, 2))):
        args = (x, w if "feature_group_count" in kw else jnp.concatenate([w, w], 2), (1, 1), ((1, 1), (1, 1)))
        out = f(*args, dimension_numbers=_DN, **kw)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(lax.conv_general_dilated(*args, dimension_numbers=_DN, **kw)))
    routed = lambda x, w: f(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)
    assert "custom_vjp" in str(jax.make_jaxpr(routed)(x, jnp.concatenate([w, w], 2)))
    assert "custom_vjp" not in str(jax.make_jaxpr(routed)(x[..., :3], w[:, :, :3]))  # the RGB stem: lax's
    with pytest.raises(ValueError, match="dw_mode"):
        conv.make_conv_general_dilated("fast", "polyphase")


def test_encoder_gradients_equal_xla_path_and_config_round_trips():
    fast_cfg = enc.EncoderConfig(**TINY_RESNET)
    xla_cfg = enc.EncoderConfig(**TINY_RESNET, conv_backward="xla")
    assert "conv_backward" not in fast_cfg.to_dict()  # configs written before the field match
    assert enc.EncoderConfig.from_dict(xla_cfg.to_dict()) == xla_cfg
    with pytest.raises(ValueError, match="conv_backward"):
        enc.EncoderConfig(**TINY_RESNET, conv_backward="oneDNN")
    fast, slow = enc.init_encoder(fast_cfg, seed=3), enc.init_encoder(xla_cfg, seed=3)
    g_fast, p_fast, r_fast = enc.split_params(fast)
    g_slow, p_slow, r_slow = enc.split_params(slow)
    # Same parameter layout and values: a state of one model loads into the other.
    assert jax.tree.structure(p_fast) == jax.tree.structure(p_slow)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(p_fast), nnx.to_pure_dict(p_slow))
    x = jax.random.uniform(jax.random.key(0), (3, 40, 40, 3))
    ct = jax.random.normal(jax.random.key(1), (3, enc.num_outputs(fast_cfg)))

    def loss(g, p, r):
        return jnp.sum(enc.apply(g, p, r, x) * ct)

    (v_fast, gr_fast) = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(g_fast, p_fast, r_fast)
    (v_slow, gr_slow) = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(g_slow, p_slow, r_slow)
    np.testing.assert_allclose(float(v_fast), float(v_slow), rtol=1e-6)
    stem = nnx.to_pure_dict(gr_slow)["backbone"]["conv1"]["kernel"]
    assert float(jnp.max(jnp.abs(stem))) > 0  # the gradient reaches the first convolution
    for a, b in zip(jax.tree.leaves(gr_fast), jax.tree.leaves(gr_slow)):
        assert a.shape == b.shape
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * float(jnp.max(jnp.abs(b))) + 1e-7
