"""NeuFace and direct optimizers: bad input is masked (never NaN), determinism, padding, convergence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import encoder as enc
from neuface_jax.core import fit

from ..flame_jax.conftest import make_random_embedding68, make_random_model


@pytest.fixture(scope="module")
def face():
    # A small random FLAME-layout model keeps compile times short; the demo head runs in test_pipeline.
    model, _ = make_random_model(seed=4, num_v=400, num_f=700, n_shape=8, n_expr=6, scale=2e-3)
    return fit.FaceModel(model, make_random_embedding68(model.num_faces, seed=4))


@pytest.fixture(scope="module")
def ecfg(face):
    m = face.flame
    return enc.EncoderConfig.small(
        n_shape=m.num_shape, n_expr=m.num_expression, image_size=16, small_widths=(4, 8), small_blocks=(1, 1),
        head_hidden=16,
    )


def _target_clip(face, t=9, w=2, seed=0, size=16):
    """Landmark targets produced by a known FLAME motion through the weak-perspective camera."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((t, w, 15), np.float32)
    pose[..., 1] = np.linspace(-0.3, 0.3, t)[:, None] + np.array([0.0, 0.4])[:w]
    pose[..., 6] = 0.15
    shape = rng.normal(size=face.flame.num_shape).astype(np.float32) * 0.5
    expr = np.zeros((t, w, face.flame.num_expression), np.float32)
    cam = np.tile(np.array([9.0, 0.0, 0.02], np.float32), (t, w, 1))
    _, lmk2d, _ = fit.evaluate_params(face, jnp.asarray(shape), jnp.asarray(expr), jnp.asarray(pose), jnp.asarray(cam))
    images = rng.random((t, w, size, size, 3)).astype(np.float32)
    return fit.ClipData(
        images=jnp.asarray(images), landmarks=lmk2d, landmarks_mask=jnp.ones((t, w, 68)), frame_mask=jnp.ones((t, w))
    )


def _corrupt(data: fit.ClipData) -> fit.ClipData:
    lmk = np.array(data.landmarks)
    lm = np.array(data.landmarks_mask)
    fm = np.array(data.frame_mask)
    lmk[0, 0, 5] = np.nan  # a NaN landmark
    lm[0, 0, 5] = 0.0
    lmk[2, 0] = np.nan  # a frame with every landmark invalid (and NaN)
    lm[2, 0] = 0.0
    fm[2, 0] = 0.0
    lmk[:, 1, 3] = np.inf  # the second view: one landmark always invalid
    lm[:, 1, 3] = 0.0
    lmk[4:, 1] = np.nan  # the second view loses its detections from frame 4 on
    lm[4:, 1] = 0.0
    fm[4:, 1] = 0.0
    return fit.ClipData(images=data.images, landmarks=jnp.asarray(lmk), landmarks_mask=jnp.asarray(lm), frame_mask=jnp.asarray(fm))


@pytest.mark.slow
def test_bad_input_is_masked_never_nan(face, ecfg):
    data = _corrupt(_target_clip(face))
    cfg = fit.FitConfig(num_epochs=2, chunk_frames=4, learning_rate=1e-3, direct_learning_rate=1e-2)
    for opt in (fit.NeuFace(face, ecfg, cfg), fit.DirectFit(face, ecfg, cfg)):
        res = opt.fit(data)
        for name in ("shape", "expression", "pose", "cam", "vertices", "landmarks2d"):
            assert np.all(np.isfinite(getattr(res, name))), (type(opt).__name__, name)
        assert res.vertices.shape[:2] == (9, 2)  # every frame and view returned, tail frame included
        assert all(np.all(np.isfinite(v)) for v in res.history.values())


def test_view_with_no_valid_frame(face, ecfg):
    data = _target_clip(face, t=8)
    fm = np.array(data.frame_mask)
    fm[:, 1] = 0.0
    lmk = np.array(data.landmarks)
    lmk[:, 1] = np.nan
    data = fit.ClipData(images=data.images, landmarks=jnp.asarray(lmk),
                        landmarks_mask=data.landmarks_mask * jnp.asarray(fm)[..., None], frame_mask=jnp.asarray(fm))
    cfg = fit.FitConfig(num_epochs=1, chunk_frames=4, learning_rate=1e-3)
    res = fit.NeuFace(face, ecfg, cfg).fit(data)
    assert np.all(np.isfinite(res.vertices))


def test_same_seed_same_result(face, ecfg):
    data = _target_clip(face, t=8)
    cfg = fit.FitConfig(num_epochs=2, chunk_frames=4, learning_rate=1e-3, seed=3)
    a = fit.NeuFace(face, ecfg, cfg).fit(data)
    b = fit.NeuFace(face, ecfg, cfg).fit(data)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    c = fit.DirectFit(face, ecfg, cfg).fit(data)
    d = fit.DirectFit(face, ecfg, cfg).fit(data)
    np.testing.assert_array_equal(c.cam, d.cam)


def test_padded_tail_is_optimized_and_compiled_once(face, ecfg):
    """7 frames in chunks of 4 → one padded chunk; the step compiles once for both chunks."""
    data = _target_clip(face, t=7)
    cfg = fit.FitConfig(num_epochs=2, chunk_frames=4, learning_rate=1e-3)
    opt = fit.NeuFace(face, ecfg, cfg)
    before = fit._neuface_step._cache_size()
    res = opt.fit(data)
    after = fit._neuface_step._cache_size()
    assert after - before <= 1  # both chunks (one of them padded) share one executable
    assert res.vertices.shape[0] == 7
    # An equal optimizer (another clip of the same run) reuses the compiled step.
    fit.NeuFace(face, ecfg, cfg).fit(data)
    assert fit._neuface_step._cache_size() == after
    # the last (tail) frame moved away from the initial mean prediction
    init = fit.NeuFace(face, ecfg, cfg.replace(num_epochs=0)).fit(data)
    assert np.abs(res.cam[-1] - init.cam[-1]).max() > 1e-4


@pytest.mark.slow
def test_direct_fit_converges_on_clean_targets(face, ecfg):
    data = _target_clip(face, t=4, w=1)
    cfg = fit.FitConfig(num_epochs=150, chunk_frames=4, direct_learning_rate=2e-2, loss={"landmark": 10.0})
    res = fit.DirectFit(face, ecfg, cfg).fit(data)
    err = np.abs(res.landmarks2d - np.asarray(data.landmarks)).mean()
    init = np.abs(fit.DirectFit(face, ecfg, cfg.replace(num_epochs=0)).fit(data).landmarks2d - np.asarray(data.landmarks)).mean()
    assert err < 0.2 * init


def test_neuface_reduces_landmark_error(face, ecfg):
    data = _target_clip(face, t=8, w=2)
    cfg = fit.FitConfig(num_epochs=60, chunk_frames=4, learning_rate=1e-3)
    res = fit.NeuFace(face, ecfg, cfg).fit(data)
    init = fit.NeuFace(face, ecfg, cfg.replace(num_epochs=0)).fit(data)
    err = lambda r: np.abs(r.landmarks2d - np.asarray(data.landmarks)).mean()  # noqa: E731
    assert err(res) < 0.75 * err(init)
    assert res.history["landmark"][-1] < res.history["landmark"][0]


def test_bn_training_updates_statistics(face, ecfg):
    data = _target_clip(face, t=4, w=1)
    cfg = fit.FitConfig(num_epochs=1, chunk_frames=4, learning_rate=1e-3, freeze_bn=False)
    opt = fit.NeuFace(face, ecfg, cfg)
    state = opt.init_state()
    before = jax.tree.map(np.array, state.rest)
    state, *_ = opt.step_fn(state, opt.to_chunks(data)[0], jax.random.key(0), opt.initial_context(1), face)
    changed = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), state.rest, before)
    assert max(jax.tree.leaves(changed)) > 0


def test_fit_config_is_frozen_hashable_and_accepts_a_loss_dict():
    a = fit.FitConfig(loss={"landmark": 10.0, "jaw_smooth": ("jaw_smooth", 5.0, {"stop_gradient_target": True})})
    b = fit.FitConfig(loss={"landmark": 10.0, "jaw_smooth": ("jaw_smooth", 5.0, {"stop_gradient_target": True})})
    assert a == b and hash(a) == hash(b)
    assert a.loss == {"landmark": 10.0, "jaw_smooth": ("jaw_smooth", 5.0, {"stop_gradient_target": True})}
    assert isinstance(a.loss, dict)  # json / asdict / dict(...) see a dict
    with pytest.raises(TypeError):
        a.loss["landmark"] = 1.0
    with pytest.raises(Exception):
        a.num_epochs = 3  # frozen
    # Term order fixes the order of a compiled step's statistics: reordered terms are another config.
    c = fit.FitConfig(loss={"jaw_smooth": ("jaw_smooth", 5.0, {"stop_gradient_target": True}), "landmark": 10.0})
    assert c != a
    # The epoch count and the seed do not reach the compiled steps.
    assert a.replace(num_epochs=7, seed=3).compile_key() == a.compile_key()
    assert hash(fit.FitConfig(landmark_weights=np.ones(68))) == hash(fit.FitConfig(landmark_weights=[1.0] * 68))
    assert fit.FitConfig().loss == dict(fit.losses_lib.REFERENCE_LOSS_CONFIG)


def test_optimizers_with_equal_settings_share_static_arguments(face, ecfg):
    a = fit.NeuFace(face, ecfg, fit.FitConfig(num_epochs=2, seed=1))
    b = fit.NeuFace(face, ecfg, fit.FitConfig(num_epochs=5, seed=2))
    assert a.static == b.static and hash(a.static) == hash(b.static)
    assert fit.DirectFit(face, ecfg, fit.FitConfig()).static != fit.NeuFace(face, ecfg, fit.FitConfig(chunk_frames=4)).static


def test_learning_rate_schedule_values_and_the_optimizer_follows_them():
    const = fit.FitConfig(learning_rate=0.1)
    np.testing.assert_allclose(fit.learning_rate_at(const, np.array([0.0, 0.5, 1.0])), 0.1, rtol=1e-6)
    cos = fit.FitConfig(learning_rate=0.1, lr_schedule="cosine", lr_warmup=0.1)
    at = jax.jit(lambda f: fit.learning_rate_at(cos, f))
    lr = np.asarray(at(np.array([0.0, 0.05, 0.1, 0.55, 1.0], np.float32)))
    np.testing.assert_allclose(lr, [0.0, 0.05, 0.1, 0.05, 0.0], atol=1e-6)  # warm-up, peak, cosine midpoint, end
    assert np.all(np.diff(np.asarray(at(np.linspace(0.1, 1.0, 50, dtype=np.float32)))) <= 1e-9)
    # Adam's step on a constant gradient is 1 per weight: the updates are the schedule at the midpoints
    # (i + 1/2) / total of the run, the total being state (one executable for any total).
    opt = fit.neuface_optimizer(cos)
    params = {"w": jnp.zeros(3)}
    update = jax.jit(opt.update)
    for total in (10, 4):
        state = fit.with_total_updates(opt.init(params), total)
        steps = []
        for _ in range(total):
            u, state = update({"w": jnp.ones(3)}, state, params)
            steps.append(float(u["w"][0]))
        expect = -np.asarray(at(((np.arange(total) + 0.5) / total).astype(np.float32)))
        np.testing.assert_allclose(steps, expect, rtol=1e-4, atol=1e-9)
    assert update._cache_size() == 1
    u, _ = update({"w": jnp.ones(3)}, opt.init(params), params)  # total unknown: the peak rate
    np.testing.assert_allclose(u["w"], -0.1, rtol=1e-4)
    # the constant schedule is optax's Adam itself (unchanged states and checkpoints)
    assert jax.tree.structure(fit.neuface_optimizer(const).init(params)) == jax.tree.structure(
        fit.optax.adam(0.1).init(params))
    with pytest.raises(ValueError, match="lr_schedule"):
        fit.FitConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="early_stop"):
        fit.FitConfig(early_stop=-1.0)
    # early stopping is decided outside the compiled step
    assert cos.replace(early_stop=0.1, early_stop_window=3, num_epochs=30).compile_key() == cos.compile_key()


def test_should_stop_on_window_means():
    cfg = fit.FitConfig(early_stop=0.02, early_stop_window=3)
    flat = [1.0, 0.999, 1.001, 1.0, 0.998, 1.001]
    assert not fit.should_stop(flat[:5], cfg)  # needs two windows
    assert fit.should_stop(flat, cfg)
    assert not fit.should_stop(0.9 ** np.arange(6), cfg)  # still falling 10 % an epoch
    assert not fit.should_stop(flat, cfg.replace(early_stop=0.0))  # off
    both = np.stack([flat, 0.9 ** np.arange(6)], axis=1)  # [epochs, clips]: one clip still moves
    assert not fit.should_stop(both, cfg) and fit.should_stop(both[:, :1], cfg)


def test_early_stopping_in_the_fit_loop(face, ecfg):
    """The loop stops at the first epoch ``should_stop`` holds (its criterion: the test above) and records
    the epochs run; a moving run goes on. Early stopping is outside the compiled step, so both runs reuse
    test_neuface_reduces_landmark_error's executables."""
    data = _target_clip(face, t=8, w=2)
    base = fit.FitConfig(num_epochs=6, chunk_frames=4, learning_rate=1e-3, early_stop_window=2)
    # Moving: the landmark fit from a random encoder falls by far more than 0.1 % a window.
    moving = fit.NeuFace(face, ecfg, base.replace(early_stop=1e-3)).fit(data)
    assert moving.history["epochs_run"] == [6.0] and fit.epochs_run(moving, base) == 6
    # "Converged" under a 100 % tolerance: stopped once two windows exist, its last epoch recorded.
    tot = []
    stopped = fit.NeuFace(face, ecfg, base.replace(early_stop=1.0)).fit(data, progress=lambda e, p: tot.append(p))
    assert stopped.history["epochs_run"] == [4.0] and len(tot) == 4 and np.isfinite(stopped.vertices).all()
    assert fit.should_stop([p["total"] for p in tot], base.replace(early_stop=1.0))
    # a schedule's total updates come from the clip: epochs x chunks holding frames
    state = fit.NeuFace(face, ecfg, base.replace(lr_schedule="cosine")).init_state(num_frames=7)
    assert float(state.opt_state[1].total) == 6 * 2
