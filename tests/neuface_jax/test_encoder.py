import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from neuface_jax.core import encoder as enc

# A tiny configuration: every test here compiles it, so keep it small.
TINY = enc.EncoderConfig.small(small_widths=(8, 16), small_blocks=(1, 1), head_hidden=32, image_size=32)


def _images(n, size=32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((n, size, size, 3)), jnp.float32)


@pytest.fixture(scope="module")
def tiny_model():
    return enc.init_encoder(TINY, seed=0)


@pytest.fixture(scope="module")
def tiny_random_head():
    """Non-zero final layer, so outputs depend on the image (BN behaviour becomes visible)."""
    return enc.init_encoder(dataclasses.replace(TINY, zero_init_head=False), seed=1)


def _bn_params_in(state, model):
    bn = enc.batchnorm_paths(model)
    return [p for p in enc.state_paths(state) if any(p[: len(b)] == b for b in bn)]


# ----------------------------------------------------------------------------- layout and decoding


def test_layouts_and_sizes():
    deca = enc.EncoderConfig()
    assert enc.num_outputs(deca) == 236
    sl = enc.output_slices(deca)
    assert (sl["shape"], sl["texture"], sl["expression"]) == (slice(0, 100), slice(100, 150), slice(150, 200))
    assert (sl["global_pose"], sl["jaw_pose"], sl["camera"], sl["light"]) == (
        slice(200, 203), slice(203, 206), slice(206, 209), slice(209, 236))
    compact = enc.EncoderConfig(layout="compact", predict_neck=True, predict_eyes=True)
    assert enc.num_outputs(compact) == 100 + 50 + 6 + 3 + 6 + 3
    assert enc.num_outputs(enc.EncoderConfig(predict_eyes=True)) == 236 + 6


def test_decode_outputs_places_every_slice():
    cfg = enc.EncoderConfig(layout="compact", n_shape=4, n_expr=3, predict_neck=True, predict_eyes=True)
    raw = jnp.arange(enc.num_outputs(cfg), dtype=jnp.float32)[None].repeat(2, 0)
    p = enc.decode_outputs(raw, cfg)
    assert p.shape.shape == (2, 4) and p.expression.shape == (2, 3) and p.pose.shape == (2, 15)
    np.testing.assert_array_equal(p.shape[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(p.expression[0], [4, 5, 6])
    # global 7-9, jaw 10-12, neck 13-15, eyes 16-21, camera 22-24.
    np.testing.assert_array_equal(p.pose[0], [7, 8, 9, 13, 14, 15, 10, 11, 12, 16, 17, 18, 19, 20, 21])
    np.testing.assert_array_equal(p.cam[0], [22, 23, 24])
    np.testing.assert_array_equal(p.jaw_pose[0], [10, 11, 12])
    deca = enc.EncoderConfig()
    p = enc.decode_outputs(jnp.arange(236.0), deca)
    np.testing.assert_array_equal(p.pose[3:6], 0.0)  # neck fixed at 0
    np.testing.assert_array_equal(p.pose[6:9], [203, 204, 205])
    np.testing.assert_array_equal(p.cam, [206, 207, 208])
    with pytest.raises(ValueError):
        enc.decode_outputs(jnp.zeros((2, 10)), deca)


def test_clip_shape_masked_mean():
    shapes = jnp.array([[1.0, 2.0], [3.0, 4.0], [jnp.nan, jnp.nan]])
    np.testing.assert_allclose(enc.clip_shape(shapes, jnp.array([1, 1, 0])), [2.0, 3.0])
    np.testing.assert_array_equal(enc.clip_shape(shapes, jnp.zeros(3)), [0.0, 0.0])
    np.testing.assert_allclose(enc.clip_shape(shapes[:2]), [2.0, 3.0])


def test_config_json_round_trip_and_validation():
    cfg = enc.EncoderConfig.small(cam_translation_init=(0.01, -0.02), dtype="bfloat16")
    assert enc.EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        enc.EncoderConfig(arch="vgg")
    with pytest.raises(ValueError):
        enc.EncoderConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# ----------------------------------------------------------------------------- networks


def test_small_output_shape_and_mean_face_init(tiny_model):
    raw = jax.jit(lambda x: tiny_model(x))(_images(3))
    assert raw.shape == (3, enc.num_outputs(TINY)) and raw.dtype == jnp.float32
    # Untrained: exactly the mean face at the s0 camera, whatever the image.
    np.testing.assert_array_equal(raw, np.broadcast_to(enc.initial_output(TINY), raw.shape))
    p = enc.decode_outputs(raw, TINY)
    np.testing.assert_array_equal(p.shape, 0.0)
    np.testing.assert_array_equal(p.expression, 0.0)
    np.testing.assert_array_equal(p.pose, 0.0)
    np.testing.assert_array_equal(p.cam, np.tile([enc.DEFAULT_CAM_SCALE, 0.0, 0.0], (3, 1)))


def test_resnet50_structure_without_compiling():
    cfg = enc.EncoderConfig()
    abstract = nnx.eval_shape(lambda: enc.Encoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    # torchvision resnet50 has 25,557,032 parameters, 2,049,000 of them in its 1000-way fc; our
    # head is 2048·1024 + 1024 + 1024·236 + 236.
    assert n_params == 25_557_032 - 2_049_000 + 2048 * 1024 + 1024 + 1024 * 236 + 236
    out = jax.eval_shape(
        lambda p, r, x: nnx.merge(graphdef, p, r)(x), params, rest, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    )
    assert out.shape == (1, 236)
    # Bottleneck widths and the stride on the 3×3 conv (torchvision v1.5).
    block = abstract.backbone.layer2[0]
    assert block.conv2.strides == (2, 2) and block.conv1.strides == (1, 1)
    assert block.conv3.kernel.shape == (1, 1, 128, 512)


@pytest.mark.slow
def test_resnet50_runs_at_64():
    model = enc.init_encoder(enc.EncoderConfig(), seed=0)
    raw = jax.jit(lambda x: model(x))(_images(1, 64))
    np.testing.assert_allclose(raw[0], enc.initial_output(enc.EncoderConfig()), atol=0)


def test_freeze_bn_split_and_running_stats(tiny_random_head):
    model = tiny_random_head
    graphdef, trainable, rest = enc.split_params(model, freeze_bn=True)
    assert enc.batchnorm_paths(model)  # the model has BN layers
    assert _bn_params_in(trainable, model) == []
    kinds = {p[-1] for p in _bn_params_in(rest, model)}
    assert kinds == {"scale", "bias", "mean", "var"}
    assert all(isinstance(v, nnx.Param) for v in jax.tree.leaves(trainable, is_leaf=lambda x: isinstance(x, nnx.Variable)))
    # Running statistics: an image's output does not depend on the rest of the batch.
    fwd = jax.jit(lambda t, r, x: enc.apply(graphdef, t, r, x))
    x = _images(3)
    out_a = fwd(trainable, rest, x)
    out_b = fwd(trainable, rest, x.at[1:].set(_images(2, seed=7)))
    np.testing.assert_allclose(out_a[0], out_b[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out_a[1], out_b[1])


def test_unfrozen_bn_trains_scale_and_updates_stats(tiny_random_head):
    model = tiny_random_head
    graphdef, trainable, rest = enc.split_params(model, freeze_bn=False)
    kinds = {p[-1] for p in _bn_params_in(trainable, model)}
    assert kinds == {"scale", "bias"}
    assert {p[-1] for p in enc.state_paths(rest)} == {"mean", "var"}
    fwd = jax.jit(lambda t, r, x: enc.apply(graphdef, t, r, x, update_bn_stats=True))
    x = _images(3)
    out_a, new_rest = fwd(trainable, rest, x)
    out_b, _ = fwd(trainable, rest, x.at[1:].set(_images(2, seed=7)))
    assert jax.tree.structure(new_rest) == jax.tree.structure(rest)
    assert not np.allclose(out_a[0], out_b[0])  # batch statistics couple the images
    assert all(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(jax.tree.leaves(rest), jax.tree.leaves(new_rest)))


def test_one_adam_step_changes_outputs(tiny_model):
    graphdef, trainable, rest = enc.split_params(tiny_model, freeze_bn=True)
    x = _images(2)
    target = jnp.zeros((2, enc.num_outputs(TINY))).at[:, :3].set(1.0)
    tx = optax.adam(1e-2)
    opt_state = tx.init(trainable)

    @jax.jit
    def step(trainable, opt_state):
        def loss_fn(t):
            return jnp.mean((enc.apply(graphdef, t, rest, x) - target) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss, grads

    new_trainable, _, loss, grads = step(trainable, opt_state)
    g_fc2 = grads["fc2"]["kernel"][...]
    assert float(jnp.abs(g_fc2).max()) > 0  # zero-initialized weights still get gradient
    before = enc.apply(graphdef, trainable, rest, x)
    after = enc.apply(graphdef, new_trainable, rest, x)
    assert not np.allclose(before, after)
    assert float(jnp.mean((after - target) ** 2)) < float(loss)


def test_vmap_over_stacked_clip_params(tiny_random_head):
    g1, t1, r1 = enc.split_params(tiny_random_head)
    # A second clip's copy of the weights (same config, hence the same graphdef), perturbed.
    leaves, treedef = jax.tree.flatten(t1)
    rng = np.random.default_rng(0)
    t2 = jax.tree.unflatten(treedef, [a + 0.05 * rng.normal(size=a.shape).astype(np.float32) for a in leaves])
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), t1, t2)
    x = _images(2)
    out = jax.jit(jax.vmap(lambda t: enc.apply(g1, t, r1, x)))(stacked)
    assert out.shape == (2, 2, enc.num_outputs(TINY))
    np.testing.assert_allclose(out[0], enc.apply(g1, t1, r1, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], enc.apply(g1, t2, r1, x), rtol=1e-5, atol=1e-6)


def test_orbax_round_trip(tmp_path, tiny_random_head):
    model = tiny_random_head
    x = _images(2)
    path = tmp_path / "enc"
    enc.save_encoder(path, model, model.config)
    loaded, cfg = enc.load_encoder(path)
    assert cfg == model.config
    np.testing.assert_array_equal(jax.jit(lambda x: loaded(x))(x), jax.jit(lambda x: model(x))(x))
    with pytest.raises(Exception):
        enc.save_encoder(path, model, model.config)  # refuses to overwrite silently
    # From the functional split, overwriting.
    graphdef, trainable, rest = enc.split_params(model)
    trainable = jax.tree.map(lambda a: a + 1.0, trainable)
    enc.save_encoder(path, (trainable, rest), model.config, overwrite=True)
    loaded2, _ = enc.load_encoder(path)
    np.testing.assert_allclose(
        jax.jit(lambda x: loaded2(x))(x), enc.apply(graphdef, trainable, rest, x), rtol=1e-6
    )
    with pytest.raises(FileNotFoundError):
        enc.load_encoder(tmp_path / "missing")


def test_bf16_compute_dtype():
    cfg = dataclasses.replace(TINY, dtype="bfloat16")
    model = enc.init_encoder(cfg, seed=0)
    raw = jax.jit(lambda x: model(x))(_images(2))
    assert raw.dtype == jnp.float32
    np.testing.assert_array_equal(raw, np.broadcast_to(enc.initial_output(cfg), raw.shape))
    assert model.backbone.conv1.kernel[...].dtype == jnp.float32  # parameters stay float32
