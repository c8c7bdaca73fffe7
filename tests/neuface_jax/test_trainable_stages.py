"""A frozen backbone prefix (``FitConfig.trainable_stages``): its activations, computed once per clip,
give exactly the full network's outputs; only the later stages and the head move; all stages
trainable is full fine-tuning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.annotation import run as run_lib
from neuface_jax.annotation.config import SetupConfig
from neuface_jax.common.settings import settings_of
from neuface_jax.core import encoder as enc
from neuface_jax.core import fit, parallel

from .test_fit import ecfg, face  # noqa: F401  (the same small random model and encoder fixtures)

TINY_RESNET = dict(arch="resnet50", resnet_widths=(4, 4, 4, 4), resnet_blocks=(1, 1, 1, 1), head_hidden=8,
                   image_size=32, zero_init_head=False)


def _clip(face, t=6, w=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return fit.ClipData(
        images=jnp.asarray(rng.random((t, w, size, size, 3), np.float32)),
        landmarks=jnp.asarray(rng.normal(size=(t, w, 68, 2)).astype(np.float32) * 0.3),
        landmarks_mask=jnp.ones((t, w, 68)), frame_mask=jnp.ones((t, w)),
    )


@pytest.mark.parametrize("cfg", [
    pytest.param(enc.EncoderConfig.small(image_size=32, small_widths=(4, 8, 8), small_blocks=(1, 2, 1),
                                         zero_init_head=False), marks=pytest.mark.long),
    enc.EncoderConfig(**TINY_RESNET, expression_encoder=True),
], ids=["small", "resnet50_expression_encoder"])
def test_split_forward_equals_full_forward_exactly(cfg):
    model = enc.init_encoder(cfg, seed=1)
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
    full = np.asarray(model(x))
    names = enc.stage_names(cfg)
    assert names[0] == "stem" and len(names) == (5 if cfg.arch == "resnet50" else 4)
    for k in range(len(names) + 1):
        graphdef, trainable, rest = enc.split_params(model, freeze_bn=True, frozen_stages=k)
        feats = enc.apply_prefix(graphdef, trainable, rest, x, k)
        assert feats.shape[1:] == enc.prefix_feature_shape(cfg, k, 32)
        out = np.asarray(enc.apply_suffix(graphdef, trainable, rest, feats, k))
        np.testing.assert_array_equal(out, full, err_msg=f"{cfg.arch}: split after {k} stages")
        # The frozen stages' parameters are out of the trainable set, the later ones in it.
        paths = enc.state_paths(trainable)
        first = ("backbone", "layer1") if cfg.arch == "resnet50" else ("backbone", "stages", 0)
        assert any(p[: len(first)] == first for p in paths) == (k < 2)
        assert any(p[:2] == ("backbone", "conv1") for p in paths) == (k == 0)
        assert ("fc2", "kernel") in paths


def test_stage_count_is_checked(face, ecfg):
    with pytest.raises(ValueError, match="has 3 stages"):
        fit.NeuFace(face, ecfg, fit.FitConfig(trainable_stages=4))
    with pytest.raises(ValueError, match="freeze_bn"):
        fit.FitConfig(trainable_stages=1, freeze_bn=False)
    with pytest.raises(ValueError, match=">= 0"):
        fit.FitConfig(trainable_stages=-1)


def test_annotation_default_by_start():
    """annotate / annotate-dataset: the last stage + head from a trained encoder, all from a random one;
    -1 asks for full fine-tuning; the setting's help says what the default is."""
    pick = fit.annotation_trainable_stages
    assert pick(None, pretrained=True) == fit.ANNOTATION_TRAINABLE_STAGES == 1
    assert pick(None, pretrained=False) is None
    assert pick(fit.ALL_STAGES, pretrained=True) is None and pick(2, pretrained=False) == 2
    with pytest.raises(ValueError, match="trainable_stages"):
        pick(-2, pretrained=True)
    help_text = {f.name: s.help for f, s in settings_of(SetupConfig)}["trainable_stages"]
    assert "Default: 1" in help_text and "random" in help_text and "-1: all" in help_text


def test_frozen_prefix_gives_the_full_models_gradients(face, ecfg):
    data = _clip(face)
    chunk = fit.NeuFace(face, ecfg, fit.FitConfig(chunk_frames=6)).to_chunks(data)[0]
    encoder = enc.init_encoder(ecfg, seed=3)
    full = fit.NeuFace(face, ecfg, fit.FitConfig(chunk_frames=6))
    staged = fit.NeuFace(face, ecfg, fit.FitConfig(chunk_frames=6, trainable_stages=1))
    s_full, s_staged = full.init_state(encoder), staged.init_state(encoder)
    key = jax.random.key(0)
    g_full = jax.jit(jax.grad(lambda p: full.chunk_loss(p, s_full.rest, chunk, key, None, face)[0]))(s_full.params)
    (cached,) = staged.cache_features(s_staged, [chunk])
    assert cached.images.shape == (6, 2) + enc.prefix_feature_shape(ecfg, 2)
    g_staged = jax.jit(jax.grad(lambda p: staged.chunk_loss(p, s_staged.rest, cached, key, None, face)[0]))(
        s_staged.params)
    full_by_path = dict(jax.tree_util.tree_flatten_with_path(g_full)[0])
    staged_leaves = jax.tree_util.tree_flatten_with_path(g_staged)[0]
    assert 0 < len(staged_leaves) < len(full_by_path)
    for path, g in staged_leaves:
        np.testing.assert_allclose(np.asarray(g), np.asarray(full_by_path[path]), rtol=1e-4, atol=1e-7,
                                   err_msg=jax.tree_util.keystr(path))


def _changed_params(before, after) -> set[str]:
    pairs = zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree_util.tree_flatten_with_path(after)[0])
    return {jax.tree_util.keystr(p[:2]) for (p, a), (_, b) in pairs if not np.array_equal(np.asarray(a), np.asarray(b))}


def test_epochs_move_only_the_later_stages(face, ecfg):
    """Cheaper sibling of the long test below: the epoch loop on cached features, and all stages
    trainable is the full-fine-tuning split; ``annotate --warm_compile`` compiles that very step."""
    encoder = enc.init_encoder(ecfg, seed=2)
    base = fit.FitConfig(num_epochs=2, chunk_frames=4, learning_rate=1e-3)
    full, every = fit.NeuFace(face, ecfg, base), fit.NeuFace(face, ecfg, base.replace(trainable_stages=3))
    assert every.frozen_stages == 0 and every.cache_features(every.init_state(encoder), ["chunk"]) == ["chunk"]
    assert enc.state_paths(every.init_state(encoder).params) == enc.state_paths(full.init_state(encoder).params)
    opt = fit.NeuFace(face, ecfg, base.replace(trainable_stages=1))
    data = _clip(face, t=8)
    state = opt.init_state(encoder)
    chunks = opt.cache_features(state, opt.to_chunks(data))
    before = enc.split_params(encoder, freeze_bn=True)[1]
    run_lib._warm_compile(opt, encoder, 2, 68, None)
    compiled = fit._neuface_step._cache_size()
    for epoch in range(2):
        state, mean = opt.run_epoch(state, chunks, jax.random.fold_in(jax.random.key(0), epoch))
    assert np.isfinite(np.asarray(mean)).all()
    assert fit._neuface_step._cache_size() == compiled  # the warm-up compiled the feature-shaped step
    changed = _changed_params(before, enc.split_params(enc.merge_params(opt._graphdef, state.params, state.rest))[1])
    assert changed and all("conv1" not in c and "stages'][0" not in c for c in changed), changed
    assert any("stages" in c for c in changed) and any("fc2" in c for c in changed), changed


@pytest.mark.long
def test_fit_trains_only_the_later_stages_and_all_stages_is_full_finetuning(face, ecfg):
    data = _clip(face, t=8)
    encoder = enc.init_encoder(ecfg, seed=2)
    base = fit.FitConfig(num_epochs=3, chunk_frames=4, learning_rate=1e-3)
    ref = fit.NeuFace(face, ecfg, base).fit(data, encoder=encoder)
    same = fit.NeuFace(face, ecfg, base.replace(trainable_stages=3)).fit(data, encoder=encoder)
    for name in ("shape", "expression", "pose", "cam", "vertices"):
        np.testing.assert_array_equal(getattr(same, name), getattr(ref, name), err_msg=name)

    opt = fit.NeuFace(face, ecfg, base.replace(trainable_stages=1))
    state = opt.init_state(encoder)
    chunks = opt.cache_features(state, opt.to_chunks(data))
    before = enc.split_params(encoder, freeze_bn=True)[1]
    key = jax.random.key(0)
    for epoch in range(3):
        state, _ = opt.run_epoch(state, chunks, jax.random.fold_in(key, epoch))
    merged = enc.merge_params(opt._graphdef, state.params, state.rest)
    after = enc.split_params(merged, freeze_bn=True)[1]
    changed = _changed_params(before, after)
    assert changed and all("conv1" not in c and "stages'][0" not in c for c in changed), changed
    assert any("stages" in c for c in changed) and any("fc2" in c for c in changed), changed
    # The production fit and the packed path agree with this loop.
    res = opt.fit(data, encoder=encoder)
    assert np.isfinite(res.vertices).all()
    assert not np.allclose(res.expression, ref.expression)
    (packed,) = parallel.fit_packed(opt, [data], encoder=encoder)
    np.testing.assert_allclose(packed.vertices, res.vertices, rtol=1e-4, atol=1e-6)
