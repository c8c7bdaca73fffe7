"""Face-model learning: the landmark sub-model, multi-frame fitting, learning, the model file, the command."""

from __future__ import annotations

import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flame_jax
from neuface_jax import annotation
from neuface_jax.annotation import face as face_lib
from neuface_jax.annotation.config import SetupConfig
from neuface_jax.cli import main as cli_main
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import fit as fit_core
from neuface_jax import photometric
from neuface_jax.dataset.manifest import build_manifest, write_manifest
from neuface_jax.model_learning import albedo as malbedo
from neuface_jax.model_learning import corpus as corpus_lib
from neuface_jax.model_learning import fit as mfit
from neuface_jax.model_learning import learn as learn_lib
from neuface_jax.model_learning import model_file
from neuface_jax.synthetic import synth

FAST_FIT = mfit.ClipFitConfig(steps=150)


@pytest.fixture(scope="module")
def demo():
    return flame_jax.demo_model().truncate(n_shape=10, n_expr=10), flame_jax.demo_landmark_embedding()


def _bump(model, amplitude=0.006):
    """A smooth symmetric deformation of the nose and mouth region (outside a 10-component base)."""
    v = np.asarray(model.v_template, np.float64)
    lmk = np.asarray(flame_jax.landmarks(model, flame_jax.demo_landmark_embedding(), model.v_template, jnp.zeros(15)))
    field = np.zeros_like(v)
    for c in (lmk[30], lmk[51]):
        field[:, 1] += np.exp(-0.5 * np.sum((v - c) ** 2, 1) / 0.02**2)
    return (field * amplitude / np.abs(field).max()).astype(np.float32)


def _landmark_clip(model, emb, shape, seed, frames=3, views=1, noise=0.0, albedo=None, size=32):
    """Projected landmarks of ``shape`` under random head rotations; with ``albedo`` [V, 3] also the
    images of the posed meshes (SH-lit renders of ``size`` px): ``(clip, images, vertices, cams)``."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((frames, views, 15), np.float32)
    pose[..., 0:3] = rng.normal(size=(frames, views, 3)) * np.array([0.1, 0.25, 0.05])
    pose[..., 6] = np.abs(rng.normal(size=(frames, 1))) * 0.1
    expr = np.zeros((frames, views, model.num_expression), np.float32)
    out = flame_jax.forward(model, shape=jnp.asarray(shape), expression=jnp.asarray(expr), pose=jnp.asarray(pose))
    lmk3 = flame_jax.landmarks(model, emb, out.vertices, jnp.asarray(pose))
    cam = np.tile(np.array([9.0, 0.0, 0.01], np.float32), (frames, views, 1))
    lmk2 = np.asarray(camera_lib.project(lmk3, jnp.asarray(cam))) + rng.normal(size=(frames, views, 68, 2)) * noise
    clip = mfit.LandmarkClip(lmk2.astype(np.float32), np.ones((frames, views, 68), np.float32),
                             np.ones((frames, views), np.float32))
    if albedo is None:
        return clip
    raster = photometric.rasterize(out.vertices, jnp.asarray(cam), model.faces, size)
    light = photometric.directional_light_sh([0.3, 0.4, 1.0])
    rgb = photometric.render_batch(out.vertices, model.faces, jnp.asarray(cam), jnp.asarray(albedo), light, raster).rgb
    return clip, np.asarray(rgb, np.float32), np.asarray(out.vertices), cam


def test_landmark_submodel_gives_the_full_models_landmarks(demo):
    model, emb = demo
    sub, sub_emb, idx = mfit.landmark_submodel(model, emb)
    assert sub.num_vertices < model.num_vertices // 4
    rng = np.random.default_rng(0)
    shape = jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
    pose = np.zeros((4, 15), np.float32)
    pose[:, 0:3] = rng.normal(size=(4, 3)) * 0.4  # yaws both ways: several contour rows
    pose[:, 6] = 0.2
    full = flame_jax.landmarks(model, emb, flame_jax.forward(model, shape=shape, pose=pose).vertices, pose)
    part = flame_jax.landmarks(sub, sub_emb, flame_jax.forward(sub, shape=shape, pose=pose).vertices, pose)
    np.testing.assert_allclose(np.asarray(part), np.asarray(full), atol=1e-6)


def _two_clips(model, emb, rng_seed=1):
    """Two clips of one world (base + the bump field): 3 frames x 2 views, and 1 frame x 1 view."""
    world = model_file.append_identity_components(model, _bump(model)[None], "world")
    rng = np.random.default_rng(rng_seed)
    shapes = np.concatenate([rng.normal(size=(2, 10)) * 0.5, [[1.5], [-1.5]]], 1).astype(np.float32)
    return [_landmark_clip(world, emb, shapes[0], 2, frames=3, views=2), _landmark_clip(world, emb, shapes[1], 3, frames=1)]


def test_multi_frame_fit_any_frames_and_views(demo):
    """One identity over frames and views; one frame works too; bad stacking is refused."""
    model, emb = demo
    clips = _two_clips(model, emb)
    fit = mfit.fit_clips(model, emb, clips, FAST_FIT)
    assert fit.params.shape.shape == (2, 10)
    assert fit.params.rotation.shape == (2, 3, 2, 3) and fit.params.expression.shape == (2, 3, 10)
    assert np.all(fit.landmark_error < 0.02), fit.landmark_error  # normalized crop units (~2 px at 224)
    with pytest.raises(ValueError, match="stacked"):
        mfit.fit_clips(model, emb, clips[0], FAST_FIT)


def _tones(model):
    """Two clips' albedos: the prior albedo with vertical stripes (6 cm period), in opposite phases (a
    pattern no SH light can produce, unlike a colour cast or a left-right ramp)."""
    prior = malbedo.prior_albedo(model)
    stripes = np.sin(np.asarray(model.v_template)[:, 0:1] * 2 * np.pi / 0.06)
    return [np.clip(prior * (1.0 + sign * 0.25 * stripes), 0, 1).astype(np.float32) for sign in (1.0, -1.0)]


@pytest.fixture(scope="module")
def small(demo):
    """A quick learning run on the two clips (shapes shared with the fit test: no new fit compile), with
    images rendered with two albedos: one shape and one albedo component, kept apart from the base's
    identity and expression spaces."""
    model, emb = demo
    clips = _two_clips(model, emb)
    world = model_file.append_identity_components(model, _bump(model)[None], "world")
    rng = np.random.default_rng(1)
    shapes = np.concatenate([rng.normal(size=(2, 10)) * 0.5, [[1.5], [-1.5]]], 1).astype(np.float32)
    tones = _tones(model)
    rendered = [_landmark_clip(world, emb, shapes[0], 2, frames=3, views=2, albedo=tones[0]),
                _landmark_clip(world, emb, shapes[1], 3, frames=1, albedo=tones[1])]
    corpus = corpus_lib.Corpus(tuple(corpus_lib.CorpusClip(f"c{i}", c, np.arange(c.num_frames), ("front",),
                                                            images=rendered[i][1])
                                     for i, c in enumerate(clips)), emb, "ibug68", "dynamic")
    cfg = learn_lib.LearnConfig(shape_components=1, albedo_components=1, basis_size=16, steps=10, init_steps=10,
                                orthogonal_to="identity_expression", test_prior=4.0)
    return model, emb, learn_lib.learn_model(model, corpus, cfg, FAST_FIT), corpus, rendered[0][2:]


def test_learned_components_keep_the_base_and_stay_apart(small):
    model, emb, res, _, _ = small
    assert res.model.num_shape == model.num_shape + 1
    np.testing.assert_array_equal(np.asarray(res.model.shapedirs)[..., :10], np.asarray(model.shapedirs))
    np.testing.assert_array_equal(np.asarray(res.model.exprdirs), np.asarray(model.exprdirs))
    comp = res.components[0].ravel().astype(np.float64)
    assert np.linalg.norm(comp) > 0
    span = learn_lib.complement_projector(model).astype(np.float64)  # base identity + expression
    assert np.linalg.norm(span.T @ comp) < 1e-3 * np.linalg.norm(comp)
    assert res.clip_shapes.shape == (2, 11)
    assert res.record["seconds"]["per_epoch"] > 0 and len(res.record["history"]["loss"]) == 2
    assert len(res.record["history"]["init_landmark"]) == 2  # the per-clip offsets ran first
    assert res.record["learned"]["orthogonal_to"] == "identity_expression"
    assert not any(res.record["history"]["photometric"])  # off by default


def test_reassign_correlated_moves_the_identity_part_out_of_the_other_spans(demo):
    """What of the base identity coefficients and the clips' mean expressions follows the learned
    coordinates over the corpus moves into the components; every clip's meshes stay the same, the
    coordinates stay white, chance correlations of a small corpus are shrunk away (no compile)."""
    model, _ = demo
    s, e, v = model.num_shape, model.num_expression, model.num_vertices
    rng = np.random.default_rng(0)
    basis = np.asarray(model.basis, np.float64)
    comps = rng.normal(size=(2, v * 3)) * 1e-4
    q = learn_lib.complement_projector(model).astype(np.float64)
    comps = (comps - (comps @ q) @ q.T).reshape(2, v, 3)  # apart from identity and expression
    n = 60
    z = rng.normal(size=(n, 2))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True)).T)  # white over the corpus
    g_s, g_e = np.zeros((s, 2)), np.zeros((e, 2))
    g_s[0, 0], g_e[3, 1] = 0.8, 0.6  # the truth's parts in the base identity and expression spans
    shapes = rng.normal(size=(n, s)) * 0.3 + z @ g_s.T
    means = rng.normal(size=(n, e)) * 0.1 + z @ g_e.T
    new, z2, d_s, d_e, info = learn_lib.reassign_correlated(model, comps, z, shapes, means)

    def meshes(c, zz, sh, m):  # identity plus the mean expression, per clip
        return zz @ c.reshape(len(c), -1) + sh @ basis[:s] + m @ basis[s:s + e]

    np.testing.assert_allclose(meshes(new, z2, shapes + d_s, means + d_e), meshes(comps, z, shapes, means),
                               atol=1e-7)
    np.testing.assert_allclose(z2.T @ z2 / n, np.eye(2), atol=1e-6)
    moved = np.linalg.pinv(z) @ z2 @ new.reshape(2, -1) - comps.reshape(2, -1)  # per old coordinate
    want = g_s.T @ basis[:s] + g_e.T @ basis[s:s + e]
    for k in range(2):
        assert np.linalg.norm(moved[k] - want[k]) < 0.15 * np.linalg.norm(want[k])
    assert info["identity_rms_mm"][0] > 0 and info["expression_rms_mm"][1] > 0
    # 'none', or too few clips for the regression: nothing moves.
    for args in ((comps, z, shapes, means, "none"), (comps, z[:4], shapes[:4], means[:4], "identity_expression")):
        c2, _, d2s, d2e, _ = learn_lib.reassign_correlated(model, *args)
        np.testing.assert_allclose(c2, comps.astype(np.float32))
        assert not d2s.any() and not d2e.any()
    # Pure noise moves much less than the real parts.
    _, _, d3s, _, _ = learn_lib.reassign_correlated(model, comps, z, rng.normal(size=(n, s)) * 0.3,
                                                    rng.normal(size=(n, e)) * 0.1, "identity")
    assert np.linalg.norm(d3s) < 0.3 * np.linalg.norm(d_s)
    with pytest.raises(ValueError, match="spans"):
        learn_lib.reassign_correlated(model, comps, z, shapes, means, "pose")


def test_photometric_setup_stacks_the_crops(small):
    """The cheap sibling of the photometric learning test: the crops padded to the corpus's frames x
    views (masked), the full model carried for rendering; nothing of it without the term."""
    model, _, _, corpus, _ = small
    consts, clips, images = learn_lib._setup(model, corpus, learn_lib.LearnConfig(basis_size=16, photometric=0.1))
    assert images.shape == (2, 3, 2, 32, 32, 3) and consts.full is model
    np.testing.assert_array_equal(np.asarray(images[0]), corpus.clips[0].images)
    assert not np.any(np.asarray(images[1, 1:])) and not np.any(np.asarray(images[1, :, 1]))
    assert np.asarray(clips.frame_mask)[1].tolist() == [[1, 0], [0, 0], [0, 0]]
    consts, _, images = learn_lib._setup(model, corpus, learn_lib.LearnConfig(basis_size=16))
    assert images is None and consts.full is None


@pytest.mark.long
def test_photometric_term_in_learning(small):
    """The photometric term renders each clip's full mesh into its crops in both learning stages: a
    robust colour error in (0, 1) that the per-clip offsets lower at the term's rates (at the landmark
    rates, photometric_rate=1, Adam overshoots and raises it: measured 0.25 -> 0.30)."""
    model, _, _, corpus, _ = small
    cfg = learn_lib.LearnConfig(shape_components=1, basis_size=16, steps=3, init_steps=12, photometric=100.0,
                                photometric_refresh=1)
    res = learn_lib.learn_model(model, corpus, cfg, FAST_FIT)
    init, joint = res.record["history"]["init_photometric"], res.record["history"]["photometric"]
    assert len(init) == 3 and len(joint) == 2 and all(0.0 < p < 1.0 for p in init + joint), (init, joint)
    assert init[-1] < init[0] - 0.005, init  # measured: 0.252 -> 0.242
    with pytest.raises(ValueError, match="photometric_rate"):
        learn_lib.LearnConfig(photometric_rate=0.0)


def test_test_time_prior_on_learned_coefficients(small):
    """The record's prior scale weighs the learned coefficient only; a strong one pins it to zero while
    the base's coefficients keep their weight (appending components does not dilute their prior)."""
    model, emb, res, corpus, _ = small
    w = model_file.shape_prior_of(res.record, res.model.num_shape)
    np.testing.assert_allclose(w, [0.1] * 10 + [0.4], rtol=1e-6)
    np.testing.assert_allclose(model_file.shape_prior_of(None, 10), [0.1] * 10, rtol=1e-6)
    clips = [c.data for c in corpus.clips]
    free = mfit.fit_clips(res.model, emb, clips, FAST_FIT, shape_prior=mfit.shape_prior_weights(11, 10, 0.0))
    pinned = mfit.fit_clips(res.model, emb, clips, FAST_FIT, shape_prior=mfit.shape_prior_weights(11, 10, 1e5))
    assert np.all(np.abs(pinned.params.shape[:, 10]) < 0.05 * np.abs(free.params.shape[:, 10]).max())
    with pytest.raises(ValueError, match="11 identity coefficients"):
        mfit.fit_clips(res.model, emb, clips, FAST_FIT, shape_prior=np.ones(10))


def test_albedo_learned_from_the_images(small):
    """Each clip's albedo from its renders; the component is their difference; test-time coefficients."""
    model, emb, res, corpus, (verts, cam) = small
    tones = _tones(model)
    alb = res.albedo
    assert alb.basis.shape == (1, model.num_vertices, 3) and res.record["learned"]["albedo_components"] == 1
    region = photometric.face_region(model, emb) > 0
    seen = region.copy()
    seen[np.abs(np.asarray(alb.basis[0])).sum(-1) == 0] = False  # vertices no image saw keep the prior
    assert seen.sum() > 100
    # The component separates the two tones: its direction follows their difference on the face.
    diff = (tones[0] - tones[1])[seen].ravel()
    comp = np.asarray(alb.basis[0])[seen].ravel()
    assert abs(np.dot(diff, comp)) > 0.6 * np.linalg.norm(diff) * np.linalg.norm(comp)
    # Test time: the first clip's coefficient, solved from its images at its true meshes, has the sign
    # that moves the mean toward its tone.
    c = corpus.clips[0]
    coef, light = malbedo.fit_albedo(alb, model, verts, cam, c.images, c.data.frame_mask, region)
    assert light.shape == (3, 2, 9, 3)
    fitted = np.asarray(alb.albedo(coef))[seen]
    assert np.abs(fitted - tones[0][seen]).mean() < np.abs(np.asarray(alb.mean)[seen] - tones[0][seen]).mean()


@pytest.fixture(scope="module")
def learned(demo):
    """A base of 10 components; the corpus's identities also vary along one field outside it."""
    model, emb = demo
    field = _bump(model)
    world = model_file.append_identity_components(model, field[None], "world")
    rng = np.random.default_rng(5)
    shapes = np.concatenate([rng.normal(size=(8, 10)) * 0.5, rng.normal(size=(8, 1)) * 1.5], 1).astype(np.float32)
    clips = tuple(
        corpus_lib.CorpusClip(f"c{i}", _landmark_clip(world, emb, s, 10 + i, frames=3), np.arange(3), ("front",),
                              {"shape": s})
        for i, s in enumerate(shapes)
    )
    corpus = corpus_lib.Corpus(clips, emb, "ibug68", "dynamic")
    cfg = learn_lib.LearnConfig(shape_components=1, basis_size=24, steps=120)
    return model, emb, field, learn_lib.learn_model(model, corpus, cfg, FAST_FIT), world, shapes


def test_model_file_round_trip_and_other_commands_accept_it(small, tmp_path):
    model, emb, res, _, _ = small
    path = model_file.save_learned_model(res.model, tmp_path / "learned.npz", res.record, albedo=res.albedo)
    with zipfile.ZipFile(path) as zf:  # numeric and string members only: nothing to unpickle
        for name in zf.namelist():
            assert np.load(zf.open(name), allow_pickle=False).dtype != object
    loaded = flame_jax.load_model(path)
    assert loaded.num_shape == res.model.num_shape and loaded.name == res.model.name
    np.testing.assert_array_equal(np.asarray(loaded.basis), np.asarray(res.model.basis))
    record = model_file.read_learning_record(path)
    assert record["learned"]["first_component"] == 10 and record["corpus"]["clips"] == 2
    assert model_file.read_learning_record(_plain_model(model, tmp_path)) is None
    albedo = model_file.read_albedo_model(path)  # the texture members
    np.testing.assert_array_equal(np.asarray(albedo.basis), np.asarray(res.albedo.basis))
    assert model_file.read_albedo_model(_plain_model(model, tmp_path)) is None
    # annotate's model resolution and synth take it as any FLAME-format model
    setup = face_lib.resolve_face_model(str(path), emb, landmark_set="ibug68")
    assert setup.model.num_shape == 11 and not setup.is_demo
    clip = synth.synthesize_clip(seed=0, model=loaded, embedding68=emb,
                                 config=synth.SynthConfig(num_frames=2, image_size=48, crop_size=48))
    assert clip.gt["shape"].shape == (11,)
    # The test-time prior the record asks for travels in the file, and annotate's fit applies it.
    recorded = flame_jax.load_shape_prior(path)
    np.testing.assert_allclose(recorded, [0.1] * 10 + [0.4], rtol=1e-6)
    assert flame_jax.load_shape_prior(_plain_model(model, tmp_path)) is None
    ann = annotation.make_setup(SetupConfig(flame_model=str(path), encoder="random", epochs=1), embedding=emb,
                                need_landmarker=False)
    np.testing.assert_allclose(ann.fit_config.shape_prior_weights, recorded, rtol=1e-6)
    assert any("recorded in the model file" in n for n in ann.notes)
    plain = annotation.make_setup(SetupConfig(flame_model=str(_plain_model(res.model, tmp_path)), encoder="random",
                                              epochs=1), embedding=emb, need_landmarker=False)
    assert plain.fit_config.shape_prior_weights is None
    t, w, n_lmk = 1, 1, emb.num_landmarks
    data = fit_core.ClipData(jnp.zeros((t, w, 8, 8, 3)), jnp.zeros((t, w, n_lmk, 2)), jnp.ones((t, w, n_lmk)),
                             jnp.ones((t, w)))
    ws = ann.fit_config.direct_prior_weights[0]
    priors = [jax.jit(lambda p, a=a: fit_core.DirectFit(a.face, a.encoder_config, a.fit_config)._loss(
        p, data, None, a.face)[1]["prior"]) for a in (ann, plain)]  # jitted: eager op-by-op costs ~25 s
    for coef, weight in ((10, 0.4), (3, 0.1)):  # the refinement's identity prior: Σ w_i β_i² (plain: the mean)
        params = fit_core.DirectParams(jnp.zeros(11).at[coef].set(2.0), jnp.zeros((t, w, 10)), jnp.zeros((t, w, 6)),
                                       jnp.tile(jnp.array([5.0, 0.0, 0.0]), (t, w, 1)))
        np.testing.assert_allclose([float(f(params)) for f in priors], [ws * 4.0 * weight, ws * 4.0 / 11], rtol=1e-5)
    with pytest.raises(ValueError, match="shape_prior_weights"):
        bad = dict(np.load(path, allow_pickle=False))
        bad["shape_prior_weights"] = bad["shape_prior_weights"][:5]
        np.savez(tmp_path / "bad.npz", **bad)
        flame_jax.load_shape_prior(tmp_path / "bad.npz")


def _plain_model(model, tmp_path):
    p = tmp_path / "plain.npz"
    flame_jax.save_model(model, p)
    return p


@pytest.mark.long
def test_learned_model_fits_held_out_clips_better(learned):
    """Held-out identities with the missing field: the learned model explains their landmarks better.

    (Landmark error, what landmark-only learning can promise; the 3D vertex error is measured, not
    promised, by experiments/fml_synthetic.py.)"""
    model, emb, _, res, world, _ = learned
    lmk = res.record["landmark_l1"]
    assert lmk["joint_fit"] < 0.9 * lmk["base_fit"], lmk
    rng = np.random.default_rng(9)
    shapes = np.concatenate([rng.normal(size=(3, 10)) * 0.5, np.array([[2.0], [-2.0], [1.5]])], 1).astype(np.float32)
    clips = [_landmark_clip(world, emb, s, 50 + i, frames=3) for i, s in enumerate(shapes)]
    errs = {name: mfit.fit_clips(m, emb, clips, FAST_FIT).landmark_error for name, m in (("base", model), ("learned", res.model))}
    assert errs["learned"].mean() < 0.9 * errs["base"].mean(), errs


def test_bad_inputs_are_named(demo, tmp_path):
    model, emb = demo
    clip = corpus_lib.CorpusClip("no_images", _two_clips(model, emb)[1], np.arange(1), ("front",))
    with pytest.raises(ValueError, match="no_images: no images"):
        learn_lib.learn_model(model, corpus_lib.Corpus((clip,), emb, "ibug68", "dynamic"),
                              learn_lib.LearnConfig(albedo_components=2))
    with pytest.raises(ValueError, match="orthogonal_to"):
        learn_lib.LearnConfig(orthogonal_to="expression")
    with pytest.raises(ValueError, match="photometric must be >= 0"):
        learn_lib.LearnConfig(photometric=-1.0)
    with pytest.raises(ValueError, match="cold_rate"):
        learn_lib.LearnConfig(cold_rate=0.0)
    # The cold-started stage's rates: photometric_rate with the term, 1 without, cold_rate overriding
    # both.
    factor = learn_lib.rate_factor
    assert factor(learn_lib.LearnConfig(), "per_clip") == 1.0
    assert factor(learn_lib.LearnConfig(photometric=0.5), "per_clip") == pytest.approx(0.1)
    assert factor(learn_lib.LearnConfig(cold_rate=0.3), "per_clip") == pytest.approx(0.3)
    assert factor(learn_lib.LearnConfig(photometric=0.5, cold_rate=1.0), "per_clip") == 1.0
    # The joint steps after a per-clip start: refine_rate (0.1), with or without the term.
    assert factor(learn_lib.LearnConfig(), "joint") == pytest.approx(0.1)
    assert factor(learn_lib.LearnConfig(photometric=0.5, photometric_rate=0.2), "joint") == pytest.approx(0.1)
    assert factor(learn_lib.LearnConfig(photometric=0.5, init="random"), "joint") == pytest.approx(0.1)
    # refine_rate sets the joint steps' fraction after a per-clip start (not the cold stages').
    assert factor(learn_lib.LearnConfig(refine_rate=0.5), "joint") == pytest.approx(0.5)
    assert factor(learn_lib.LearnConfig(refine_rate=0.5), "per_clip") == 1.0
    assert factor(learn_lib.LearnConfig(refine_rate=0.5, init="random"), "joint") == 1.0
    with pytest.raises(ValueError, match="refine_rate"):
        learn_lib.LearnConfig(refine_rate=0.0)
    with pytest.raises(ValueError, match="no_images: no images"):
        learn_lib.learn_model(model, corpus_lib.Corpus((clip,), emb, "ibug68", "dynamic"),
                              learn_lib.LearnConfig(photometric=1.0))
    with pytest.raises(ValueError, match="no clips"):
        corpus_lib.load_corpus([], model, emb)
    (tmp_path / "bad.npz").write_bytes(b"")
    bad = tmp_path / "bad_record.npz"
    arrays = {k: v for k, v in np.load(_plain_model(model, tmp_path)).items()}
    np.savez(bad, **arrays, learning=np.array("{not json"))
    with pytest.raises(ValueError, match="bad_record.npz.*JSON"):
        model_file.read_learning_record(bad)
    assert corpus_lib.select_frames(10, "second_half", 3).tolist() == [5, 7, 9]
    assert corpus_lib.select_frames(10, "first_half", 16).tolist() == [0, 1, 2, 3, 4]


def test_learn_model_command_refuses_bad_arguments(tmp_path, capsys):
    """The cheap sibling of the end-to-end command test: registration and argument errors."""
    assert cli_main(["neuface-jax", "learn-model", f"--out={tmp_path / 'x.npz'}"]) == 2
    assert "--manifest" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text("")
    assert cli_main(["neuface-jax", "learn-model", f"--manifest={tmp_path / 'm.jsonl'}", f"--out={tmp_path / 'x.pkl'}"]) == 1
    assert ".npz" in capsys.readouterr().err
    assert cli_main(["neuface-jax", "learn-model", f"--manifest={tmp_path / 'm.jsonl'}", f"--out={tmp_path / 'x.npz'}"]) == 1
    assert "no clips" in capsys.readouterr().err


@pytest.mark.long
def test_learn_model_command_on_synth_clips(tmp_path, capsys):
    """manifest of synth clip folders → learn-model → a model file + embedding that load back."""
    cfg = synth.SynthConfig(num_frames=4, image_size=48, crop_size=48)
    for seed in (0, 1):
        synth.write_clip(synth.synthesize_clip(seed=seed, config=cfg), tmp_path / "clips" / f"c{seed}")
    write_manifest(build_manifest(tmp_path / "clips"), tmp_path / "m.jsonl")
    out = tmp_path / "model" / "learned.npz"
    rc = cli_main(["neuface-jax", "learn-model", f"--manifest={tmp_path / 'm.jsonl'}", f"--out={out}",
                   "--shape_components=2", "--learn_steps=5", "--fit_steps=20", "--basis_size=8", "--max_frames=2"])
    assert rc == 0, capsys.readouterr().err
    model = flame_jax.load_model(out)
    # Two clips' centred offsets span one direction: one component is written, not a second of noise.
    assert model.num_shape == flame_jax.demo_model().num_shape + 1
    record = model_file.read_learning_record(out)
    assert record["learned"]["shape_components"] == 1 and record["config"]["shape_components"] == 2
    assert record["corpus"]["clip_ids"] == ["c0", "c1"] and record["base"]["file"] is None
    assert "learn-model" in record["command"] and record["seconds"]["per_epoch"] > 0
    emb = flame_jax.load_landmark_embedding(out.with_name("learned.landmark_embedding.npz"), model=model)
    assert emb.num_landmarks == 68
    json.dumps(record)  # the record is plain JSON
