"""Differentiable renderer and photometric / silhouette terms: parity with the NumPy renderer,
gradients against finite differences, the term registry, and the raster refresh schedule."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flame_jax
from neuface_jax import photometric
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import fit
from neuface_jax.core import losses
from neuface_jax.media import render as np_render
from neuface_jax.photometric import albedo as albedo_lib
from neuface_jax.photometric import loss as loss_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.photometric import render as render_lib
from neuface_jax.core import encoder as enc
from neuface_jax.synthetic import synth

from .test_fit import ecfg, face  # noqa: F401  (the small random model and encoder fixtures)
from .test_trainable_stages import _clip

SIZE = 48
LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])  # model frame, toward the light


def _linear_sh(ambient=0.3, diffuse=0.7):
    """ambient + diffuse · (n·l) as SH coefficients (exact: bands 0 and 1)."""
    sh = np.zeros((9, 3), np.float32)
    sh[0] = ambient / render_lib._C0
    sh[3], sh[1], sh[2] = (diffuse * LIGHT / render_lib._C1)[:, None].repeat(3, 1)
    return sh


@pytest.fixture(scope="module")
def demo():
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    verts = jnp.asarray(model.v_template)
    cam = jnp.array([5.5, 0.0, 0.02])
    return model, emb, verts, cam


def test_render_equals_numpy_renderer(demo):
    """Where the NumPy renderer's Lambert term is unclamped (n·l ≥ 0), the two images are equal."""
    model, emb, verts, cam = demo
    faces = np.asarray(model.faces)
    raster = photometric.rasterize(verts[None], cam[None], faces, SIZE)
    albedo = albedo_lib.procedural_albedo(model, emb, seed=3)
    out = photometric.render_batch(verts[None], faces, cam[None], albedo, _linear_sh(), raster)
    screen = raster_lib.screen_vertices(np.asarray(verts), np.asarray(cam), SIZE)
    flip = np.array([1.0, -1.0, -1.0])  # model frame → the NumPy renderer's camera frame
    normals = np.asarray(flame_jax.vertex_normals(np.asarray(verts), faces)) * flip
    ref = np_render.render(screen, faces, albedo, height=SIZE, width=SIZE, normals=normals, light_direction=LIGHT * flip,
                           cull_backfaces=True)
    np.testing.assert_array_equal(np.asarray(raster.face_index[0]), ref.face_index)
    lit = (normals @ (LIGHT * flip) >= 0)[faces].all(1)
    covered = ref.face_index >= 0
    both = covered & lit[np.where(covered, ref.face_index, 0)]
    assert both.sum() > 0.6 * covered.sum() > 300
    np.testing.assert_allclose(np.asarray(out.rgb[0])[both], ref.image[both], atol=2e-5)
    # A surface point of an unmoved mesh sits at its pixel centre.
    centres = np.stack(np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5), -1)
    np.testing.assert_allclose(np.asarray(out.points[0])[covered], centres[covered], atol=1e-4)


def test_directional_light_sh_approximates_lambert():
    sh = render_lib.directional_light_sh(LIGHT)
    n = np.random.default_rng(0).normal(size=(2000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    exact = 0.3 + 0.7 * np.maximum(n @ LIGHT, 0)
    approx = np.asarray(render_lib.sh_shading(n, sh))[:, 0]
    assert np.mean(np.abs(approx - exact)) < 0.03


def test_procedural_albedo_lies_in_the_model_span(demo):
    model, emb, _, _ = demo
    m = albedo_lib.procedural_albedo_model(model, emb)
    for seed in (0, 5):
        a = np.asarray(m.albedo(albedo_lib.procedural_coefficients(seed)))
        np.testing.assert_allclose(np.clip(a, 0, 1), albedo_lib.procedural_albedo(model, emb, seed), atol=1e-6)
    region = albedo_lib.face_region(model, emb)
    assert 0.2 < region.mean() < 0.8  # the face, not the scalp, ears or neck
    assert region[np.argmax(np.asarray(model.v_template)[:, 2])] == 1  # the nose tip


def _sphere():
    v, f = np_render.uv_sphere(rings=8, segments=12)
    return jnp.asarray(v * 0.08, jnp.float32), np.asarray(f)


def _directional_check(fn, grads, args, index, direction, eps, rtol):
    """grad · d against the central difference of the (jitted) ``fn`` along ``d`` for argument ``index``."""
    analytic = float(jnp.vdot(grads[index], direction))
    shifted = lambda sign: [a + sign * eps * direction if i == index else a for i, a in enumerate(args)]  # noqa: E731
    numeric = (float(fn(*shifted(1))) - float(fn(*shifted(-1)))) / (2 * eps)
    assert abs(numeric) > 1e-4
    assert abs(analytic - numeric) <= rtol * abs(numeric), (index, analytic, numeric)


def test_gradients_match_finite_differences():
    """Photometric loss (L2 penalty, two pyramid levels) with a fixed raster: d/d vertices, camera,
    albedo and light against central differences along random directions."""
    verts, faces = _sphere()
    cam0 = jnp.array([9.0, 0.01, -0.02])
    raster = photometric.rasterize(verts, cam0, faces, 32)
    # Evaluated a third of a pixel away from the raster's camera: surface points then lie between the
    # image's pixel centres, where bilinear sampling is differentiable (at a centre it has a kink).
    cam = cam0 + jnp.array([0.0, 0.33, 0.2]) / (9.0 * 16.0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    image = jnp.asarray(np.stack([0.5 + 0.3 * np.sin(3 * xx + 1), 0.4 + 0.3 * np.cos(2 * yy), 0.3 + 0.2 * xx * yy], -1),
                        jnp.float32)
    rng = np.random.default_rng(0)
    albedo = jnp.asarray(rng.uniform(0.3, 0.9, size=(verts.shape[0], 3)), jnp.float32)
    light = jnp.asarray(render_lib.directional_light_sh(LIGHT))
    cfg = loss_lib.PhotometricConfig(penalty="l2")

    def loss(v, c, a, s):
        r = photometric.render_batch(v, faces, c, a, s, raster)
        vals, mask = photometric.photometric_loss(r, image, raster.mask, levels=2, config=cfg)
        return losses.masked_mean(vals, mask)

    d = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    args = [verts, cam, albedo, light]
    fn = jax.jit(loss)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*args)
    _directional_check(fn, grads, args, 0, d(verts.shape) * 1e-3, 1e-2, 0.05)
    _directional_check(fn, grads, args, 1, jnp.array([1.0, 3e-3, -2e-3]), 1e-2, 0.05)
    _directional_check(fn, grads, args, 2, d(albedo.shape), 1e-2, 0.02)
    _directional_check(fn, grads, args, 3, d(light.shape) * 0.1, 1e-2, 0.02)

    # Pixel-aligned: the pixel keeps its triangle, the barycentrics of its centre follow the mesh.
    def aligned(v, c):
        r = photometric.render_batch(v, faces, c, albedo, light, raster, pixel_aligned=True)
        vals, mask = photometric.photometric_loss(r, image, raster.mask, levels=2, config=cfg)
        return losses.masked_mean(vals, mask)

    at_raster = photometric.render_batch(verts, faces, cam0, albedo, light, raster, pixel_aligned=True)
    fixed = photometric.render_batch(verts, faces, cam0, albedo, light, raster)
    np.testing.assert_allclose(np.asarray(at_raster.rgb), np.asarray(fixed.rgb), atol=1e-5)  # unmoved: the same
    fn = jax.jit(aligned)
    grads = jax.jit(jax.grad(aligned, argnums=(0, 1)))(verts, cam)
    _directional_check(fn, grads, [verts, cam], 0, d(verts.shape) * 1e-3, 1e-2, 0.05)
    _directional_check(fn, grads, [verts, cam], 1, jnp.array([1.0, 3e-3, -2e-3]), 1e-2, 0.05)


def test_silhouette_gradient_matches_finite_differences():
    verts, faces = _sphere()
    cam = jnp.array([9.0, 0.0, 0.0])
    raster = photometric.rasterize(verts, cam, faces, 32)
    theta = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    oval = jnp.asarray(np.stack([16 + 14 * np.cos(theta), 16 + 12 * np.sin(theta)], -1), jnp.float32)
    outline = loss_lib._boundary(raster.face_index >= 0).reshape(-1)

    def fn(v):
        pts = render_lib.surface_points(v, faces, cam, raster).reshape(-1, 2)
        return photometric.silhouette_loss(pts, outline, oval, jnp.array(True), True)[0]

    rng = np.random.default_rng(1)
    fn = jax.jit(fn)
    _directional_check(fn, [jax.jit(jax.grad(fn))(verts)], [verts], 0,
                       jnp.asarray(rng.normal(size=verts.shape), jnp.float32) * 1e-3, 1e-2, 0.05)
    # A mesh grown toward the (larger) oval scores better.
    assert float(fn(verts * 1.3)) < float(fn(verts))


def _demo_batch(demo, scale=1.0, shift=0.0):
    """A 2-image batch of the demo head rendered with a known albedo and light, and its 68 landmarks."""
    model, emb, verts, cam = demo
    cams = jnp.stack([cam, cam + jnp.array([0.0, 0.005, 0.0])])
    v = jnp.broadcast_to(verts, (2,) + verts.shape)
    raster = photometric.rasterize(v, cams, model.faces, SIZE)
    sh = render_lib.directional_light_sh(LIGHT)
    img = photometric.render_batch(v, model.faces, cams, albedo_lib.procedural_albedo(model, emb, 2), sh, raster).rgb
    img = img + (1 - raster.mask[..., None]) * jnp.array([0.2, 0.35, 0.5])
    lmk = flame_jax.landmarks(model, emb, verts, jnp.zeros(15))
    batch = {"images": img, "vertices": v * scale + shift, "cam": cams, "faces": jnp.asarray(model.faces),
             "frame_mask": jnp.ones(2), "landmarks_target": camera_lib.project(jnp.broadcast_to(lmk, (2, 68, 3)), cams),
             "landmarks_mask": jnp.ones((2, 68))}
    return batch


def test_terms_named_in_a_fit_config_prefer_the_truth(demo):
    """Named in a FitConfig, the terms run on the batch the optimizers build (crops, cameras, faces)
    inside jit — vmapped over stacked clips as annotate-dataset's packed fits do, each clip on its own
    (clip-wide light, albedo and frame weights, the cached raster callback) — and score the true mesh
    better than a smaller or larger one."""
    model, emb, _, _ = demo
    batch = _demo_batch(demo)
    config = fit.FitConfig(loss={
        "landmark": 10.0,
        "photometric": ("photometric", 1.0, {"refresh_every": 1}),
        "photometric_vertex": ("photometric", 1.0, {"albedo": "vertex", "light": "frame", "light_prior": 0.5,
                                                    "frame_weights_in": "loss", "penalty": "trimmed",
                                                    "refresh_every": 2, "outliers": 2.0}),
        "silhouette": 1.0,
    })
    face = fit.FaceModel(model, emb)

    @jax.jit  # one compile for every call below
    def parts(cam, landmarks_mask):  # [clips, 2, 3], [clips, 2, 68]
        def one(cam, landmarks_mask):
            data = fit.ClipData(images=batch["images"][:, None], landmarks=batch["landmarks_target"][:, None],
                                landmarks_mask=landmarks_mask[:, None], frame_mask=jnp.ones((2, 1)))
            return fit._loss_batch(face, data, jnp.zeros(model.num_shape), jnp.zeros((2, 1, model.num_expression)),
                                   jnp.zeros((2, 1, 15)), cam[:, None], jax.random.key(0), config=config)[1]
        return jax.vmap(one)(cam, landmarks_mask)

    cams, mask = batch["cam"], batch["landmarks_mask"]
    scaled = [cams * jnp.array([s, 1.0, 1.0]) for s in (1.0, 0.92, 1.08)]
    out = parts(jnp.stack(scaled), jnp.stack([mask] * 3))
    at_truth = {k: v[0] for k, v in out.items()}
    assert float(at_truth["photometric"]) < 0.05 and float(at_truth["landmark"]) < 1e-4
    assert np.all(np.isfinite(np.asarray(out["photometric_vertex"])))
    with pytest.raises(ValueError, match="batch\\['step'\\]"):
        losses.total_loss({"p": ("photometric", 1.0, {"start_step": 3})}, batch)
    for i in (1, 2):
        assert float(out["photometric"][i]) > 1.5 * float(at_truth["photometric"])
        assert float(out["silhouette"][i]) > float(at_truth["silhouette"])
    # Each clip on its own: the truth scores the same beside copies of itself; without the jaw
    # landmarks the silhouette term has nothing to match: masked, exactly 0.
    again = parts(jnp.stack([cams] * 3), jnp.stack([mask, mask.at[:, :17].set(0.0), mask]))
    assert float(again["photometric"][0]) == pytest.approx(float(at_truth["photometric"]), rel=1e-5)
    assert float(again["silhouette"][1]) == 0.0 and float(again["silhouette"][0]) > 0.0


def test_schedule_weights():
    batch = {"step": jnp.int32(0)}
    assert loss_lib.schedule_weight(batch, 0, 0, "t") == 1.0
    w = [float(loss_lib.schedule_weight({"step": jnp.int32(k)}, 10, 4, "t")) for k in (9, 10, 13, 50)]
    assert w == [0.0, 0.25, 1.0, 1.0]
    cfg = loss_lib.PhotometricConfig(start_step=10, level_steps=5)
    on = [np.asarray(loss_lib.level_weights({"step": jnp.int32(k)}, cfg, 3)).tolist() for k in (10, 15, 20)]
    assert on == [[0, 0, 1], [0, 1, 1], [1, 1, 1]]  # the most blurred level first, the sharpest last
    # Which loss configs make NeuFace carry the crops beside cached activations (trainable_stages).
    assert not losses.uses_images(fit.FitConfig().loss)
    assert losses.uses_images({"landmark": 1.0, "oval": ("face_oval", 2.0)})
    assert not losses.uses_images({"landmark": 1.0, "photometric": 0.0})


@pytest.mark.long  # a NeuFace compile; the cheaper sibling is test_schedule_weights (schedule, uses_images)
def test_frozen_prefix_chunks_carry_the_crops(face, ecfg):  # noqa: F811
    """With ``trainable_stages`` the chunks carry the frozen prefix's activations and, when a loss term
    reads images, the crops beside them: the image terms run instead of failing; the step count
    reaches the terms' schedule."""
    assert not losses.uses_images(fit.FitConfig().loss)  # no image term: nothing extra is carried
    data = _clip(face)
    late = ("silhouette", 1.0, {"refresh_every": 1, "start_step": 3})
    cfg = fit.FitConfig(chunk_frames=6, trainable_stages=1, loss={"landmark": 10.0, "silhouette": late})
    assert losses.uses_images(cfg.loss)
    opt = fit.NeuFace(face, ecfg, cfg)
    state = opt.init_state(enc.init_encoder(ecfg, seed=3))
    chunk = opt.to_chunks(data)[0]
    (cached,) = opt.cache_features(state, [chunk])
    assert cached.images.shape != chunk.images.shape
    np.testing.assert_array_equal(np.asarray(cached.crops), np.asarray(chunk.images))
    fn = jax.jit(lambda step: opt.chunk_loss(state.params, state.rest, cached, jax.random.key(0), None, face, step)[1][0])
    before, after = float(fn(jnp.int32(2))["silhouette"]), float(fn(jnp.int32(3))["silhouette"])
    assert before == 0.0 and np.isfinite(after) and after > 0.0


def test_unknown_images_shape_is_a_clear_error(demo):
    batch = _demo_batch(demo)
    with pytest.raises(ValueError, match="images must be"):
        losses.total_loss({"photometric": 1.0}, dict(batch, images=batch["images"][..., :2]))


def test_raster_refreshes_every_n_calls(demo):
    model, _, verts, cam = demo
    memo = raster_lib.RasterMemo()
    images = jnp.ones((1, SIZE, SIZE, 3))
    fn = jax.jit(lambda v: raster_lib.rasterize_cached(v, cam[None], model.faces, SIZE, images, refresh_every=4,
                                                       memo=memo).face_index)
    first = fn(verts[None]).block_until_ready()
    for _ in range(9):
        later = fn(verts[None] * 1.2).block_until_ready()  # bigger: a refreshed raster covers more pixels
    assert memo.calls == 10 and memo.refreshes == 3  # calls 1, 5 and 9
    assert int((later >= 0).sum()) > int((first >= 0).sum())
    np.testing.assert_array_equal(np.asarray(fn(verts[None] * 1.2)), np.asarray(later))  # call 11: cached
    # refresh_every=1 rasterizes every call, outside the memo, and is still counted (a fit's raster share)
    refreshes, seconds = raster_lib.MEMO.refreshes, raster_lib.MEMO.seconds
    uncached = raster_lib.rasterize_cached(verts[None], cam[None], model.faces, SIZE, images, refresh_every=1)
    jax.block_until_ready(uncached.face_index)
    assert raster_lib.MEMO.refreshes == refreshes + 1 and raster_lib.MEMO.seconds > seconds
    np.testing.assert_array_equal(np.asarray(uncached.face_index), np.asarray(first))  # the same raster



def test_synthetic_clips_carry_appearance_ground_truth(demo):
    model, emb, _, _ = demo
    gt = synth.appearance_ground_truth(model, emb, synth.SynthConfig(), seed=4)
    np.testing.assert_array_equal(gt["albedo"], albedo_lib.procedural_albedo(model, emb, 4))
    light = np.asarray(np_render.DEFAULT_LIGHT)
    light = light * np.array([1.0, -1.0, -1.0]) / np.linalg.norm(light)  # camera frame → model frame
    np.testing.assert_allclose(gt["light_direction"], light, atol=1e-6)
    np.testing.assert_allclose(gt["light_sh"], render_lib.directional_light_sh(light), atol=1e-5)


def test_view_consensus_moves_only_what_the_views_share(demo):
    """Views that agree come back unchanged; otherwise every view shows the views' mean canonical mesh
    (a view left out of the mask does not count), so the term cannot pull the views apart."""
    model, _, verts, _ = demo
    c = np.asarray(verts[::7], np.float64)  # a subset of the head is plenty
    rot = np.array([[0.0, 0.3, 0.0], [0.1, -0.4, 0.05], [-0.2, 0.0, 0.1]])
    r = np.asarray(flame_jax.rotations.axis_angle_to_matrix(jnp.asarray(rot)), np.float64)
    pivot = np.array([0.0, -0.02, 0.01])
    posed = np.stack([(c - pivot) @ r[w].T + pivot for w in range(3)])  # the same mesh seen by three views
    ones = jnp.ones(3)
    np.testing.assert_allclose(np.asarray(loss_lib.view_consensus(jnp.asarray(posed), rot, ones)), posed, atol=1e-5)
    bent = posed.copy()
    bent[1] += (np.arange(c.shape[0]) % 5 == 0)[:, None] * np.array([0.0, 0.004, 0.002]) @ r[1].T  # view 1 alone
    out = np.asarray(loss_lib.view_consensus(jnp.asarray(bent), rot, ones), np.float64)
    canon = lambda v, w: (v - v.mean(0)) @ r[w]  # noqa: E731  (centred canonical mesh of view w)
    mean = np.mean([canon(bent[w], w) for w in range(3)], 0)
    for w in range(3):
        np.testing.assert_allclose(canon(out[w], w), mean, atol=1e-5)
    kept = np.asarray(loss_lib.view_consensus(jnp.asarray(bent), rot, jnp.array([1.0, 0.0, 1.0])), np.float64)
    np.testing.assert_allclose(kept[[0, 2]], posed[[0, 2]], atol=1e-5)


def test_occlusion_mask_drops_transient_errors_and_keeps_shared_ones():
    """An error that one image has at some surface points (an occluder) is dropped; an error every
    image has at the same points (a misfit the geometry must fix) is kept."""
    b, p = 6, 100
    faces = jnp.stack([jnp.arange(p)] * 3, 1)  # pixel i shows vertex i
    fi = jnp.broadcast_to(jnp.arange(p), (b, p))
    bary = jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0]), (b, p, 3))
    err = np.full((b, p), 0.05, np.float32)
    err[2, :20] = 0.5  # occluder in image 2
    err[:, 50:60] = 0.4  # a misfit every image shares
    weights = np.ones((b, p), np.float32)
    weights[:, 90:] = 0.0  # outside the face: not counted
    err[4, 77] = 0.5  # one stray pixel
    mask_fn = jax.jit(lambda e, w: loss_lib.occlusion_mask(e, fi, bary, faces, w, p, 2.0))
    keep = np.asarray(mask_fn(jnp.asarray(err), jnp.asarray(weights)))
    assert keep[2, :20].sum() == 0 and keep[4, 77] == 0
    assert keep[:, 50:60].all() and keep[:, 20:50].all() and keep[[0, 1, 3, 4, 5], :20].all()
    assert keep[4].sum() == p - 1  # nothing else in that image
    # Per-frame weights: the occluded image (mean error 3x the others') is down-weighted, by (k·median/e)²;
    # the shared misfit and the stray pixel leave their images at 1; an image without pixels gets 0.
    weights[5] = 0.0
    fw = np.asarray(loss_lib.frame_weights(jnp.asarray(err), jnp.asarray(weights), 1.5))
    e = (err * weights).sum(1) / np.maximum(weights.sum(1), 1e-6)
    np.testing.assert_allclose(fw[2], (1.5 * np.median(e[:5]) / e[2]) ** 2, rtol=1e-5)
    assert fw[2] < 0.5 and np.all(fw[[0, 1, 3, 4]] == 1.0) and fw[5] == 0.0


def test_frame_weights_reach_the_solve_and_only_where_told_the_loss(demo):
    """With one light per clip and frame weights, a blob painted over one image's mouth flags that
    image. 'solve' (the default) leaves the loss's pixel weights as they were: the appearance solve
    alone sees the frame weights; 'pixels' drops only the blob's pixels of the flagged image. The
    appearance is the same in both."""
    batch = _demo_batch(demo)
    batch = {k: (v if k == "faces" else jnp.concatenate([v, v])) for k, v in batch.items()}  # 4 images
    size = batch["images"].shape[-2]
    blob = np.zeros((4, size, size), bool)
    blob[0, int(0.62 * size):int(0.8 * size), int(0.35 * size):int(0.65 * size)] = True  # over the mouth
    batch["images"] = jnp.where(jnp.asarray(blob)[..., None], jnp.array([0.95, 0.75, 0.6]), batch["images"])

    @jax.jit  # one compile for both
    def inputs(batch):
        return {scope: loss_lib.photometric_inputs(batch, loss_lib.PhotometricConfig(  # defaults: clip light, k 1.5
            refresh_every=1, frame_weights_in=scope, solve_iterations=1)) for scope in ("solve", "pixels")}

    out = inputs(batch)
    att = np.asarray(out["solve"].attention)
    face_blob = blob & (att > 0)
    assert face_blob[0].sum() > 20
    np.testing.assert_array_equal(np.asarray(out["solve"].weights), att)
    w_pix = np.asarray(out["pixels"].weights)
    np.testing.assert_array_equal(w_pix[1:], att[1:])  # the clean images are not flagged
    assert w_pix[0][face_blob[0]].sum() < 0.3 * att[0][face_blob[0]].sum()
    rest = (att[0] > 0) & ~blob[0]
    assert w_pix[0][rest].sum() > 0.8 * att[0][rest].sum()
    np.testing.assert_allclose(np.asarray(out["pixels"].light), np.asarray(out["solve"].light), atol=1e-6)


def test_annotate_flags_add_the_image_terms(face, ecfg, monkeypatch):  # noqa: F811
    """--weight_photometric / --weight_silhouette add the terms under the recipe's schedule; a model whose
    face region cannot be found (no 68-point embedding) is a clear error, not a silent whole-mesh term."""
    from neuface_jax import annotation

    # make_setup registers the model's face region process-wide (looked up by mesh size): keep this
    # test's registration from changing the terms of later tests on the same small model.
    monkeypatch.setattr(albedo_lib, "_REGIONS", dict(albedo_lib._REGIONS))
    from neuface_jax.annotation.config import SetupConfig

    assert SetupConfig().image_terms() == {}
    terms = SetupConfig(weight_photometric=5.0, weight_silhouette=2.0, image_terms_start=30).image_terms()
    assert terms["photometric"][:2] == ("photometric", 5.0) and terms["photometric"][2]["start_step"] == 30
    # NeuFace: the term's defaults (one light per clip), re-rasterized every update; the silhouette every 4.
    assert "light" not in terms["photometric"][2] and terms["photometric"][2]["refresh_every"] == 1
    assert terms["silhouette"][2]["refresh_every"] == loss_lib.RECIPE_REFRESH_EVERY
    assert terms["silhouette"][2]["ramp_steps"] == loss_lib.RECIPE_RAMP_STEPS
    with pytest.raises(ValueError, match="image term weights"):
        SetupConfig(weight_photometric=-1.0)
    from neuface_jax.synthetic.demo import DemoConfig

    demo_loss = DemoConfig(weight_silhouette=3.0).fit_config().loss
    assert demo_loss["silhouette"][1] == 3.0 and "photometric" not in demo_loss and demo_loss["landmark"] == 10.0
    setup = annotation.make_setup(SetupConfig(weight_photometric=5.0), model=face.flame, embedding=face.embedding,
                                  encoder_config=ecfg, need_landmarker=False)
    assert setup.fit_config.loss["photometric"][1] == 5.0 and setup.fit_config.loss["landmark"] == 10.0
    with pytest.raises(ValueError, match="face region, found through a 68-point"):
        annotation.make_setup(SetupConfig(weight_photometric=5.0, landmark_set="mediapipe105"),
                              model=flame_jax.demo_model(), embedding=flame_jax.demo_mediapipe_embedding(),
                              encoder_config=ecfg, need_landmarker=False)


@pytest.mark.long  # a packed NeuFace compile (~25 s CPU); cheaper sibling: test_terms_named_in_a_fit_config_prefer_the_truth
def test_image_terms_run_in_packed_fits(face, ecfg):  # noqa: F811
    """annotate-dataset's packed fits (vmap over stacked clips, the frozen prefix carrying the crops):
    the photometric term runs per clip — the host raster callback under vmap — and scores."""
    from neuface_jax.core import parallel

    loss = {"landmark": 10.0, "photometric": ("photometric", 1.0, {"refresh_every": 2, "albedo": "vertex"})}
    cfg = fit.FitConfig(loss=loss, num_epochs=1, chunk_frames=2, trainable_stages=1)
    clips = [_clip(face, t=2, w=2, seed=s) for s in (0, 1)]
    seen, calls = [], raster_lib.MEMO.calls
    results = parallel.fit_packed(fit.NeuFace(face, ecfg, cfg), clips, encoder=enc.init_encoder(ecfg, seed=0),
                                  mesh=parallel.make_mesh("clips", jax.devices()[:1]),
                                  progress=lambda epoch, stats: seen.append(np.asarray(stats)))
    assert len(results) == 2 and all(np.isfinite(r.vertices).all() for r in results)
    photo = np.stack(seen)[..., fit._parts_template(cfg, 2).index("photometric")]  # [epochs, clips]
    assert photo.shape == (1, 2) and np.all(np.isfinite(photo)) and np.all(photo > 0)
    assert raster_lib.MEMO.calls > calls  # the cached raster callback ran inside the packed step
