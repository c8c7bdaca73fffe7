"""The overlay a researcher reads: mesh style, the two landmark colours, labels and legend, side by side,
and the settings that reach it from ``annotate``, ``annotate-dataset`` and ``demo``."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from absl import flags

import flame_jax

from neuface_jax import annotation as annotate_lib
from neuface_jax import cli
from neuface_jax.annotation import OutputConfig, PrepareConfig, SetupConfig
from neuface_jax.annotation.scoring import frame_nme
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.annotate import _define as define_annotate_flags
from neuface_jax.cli.annotate_dataset import _define as define_dataset_flags
from neuface_jax.cli.demo import _define as define_demo_flags
from neuface_jax.core import encoder
from neuface_jax.media import export, render, video
from neuface_jax.synthetic import demo as demo_lib

SIZE = 256
GREY = 90


def _sphere_clip(t: int = 1):
    """A sphere "head" of radius 0.6 in the middle of a grey SIZE x SIZE frame (identity crop, cam s=1)."""
    verts, faces = render.uv_sphere(24, 48)
    verts = 0.6 * verts
    images = np.full((t, 1, SIZE, SIZE, 3), GREY, np.uint8)
    vertices = np.broadcast_to(verts, (t, 1) + verts.shape)
    cams = np.tile([1.0, 0.0, 0.0], (t, 1, 1))
    crop = np.tile(np.array([[224 / SIZE, 0, 0], [0, 224 / SIZE, 0]]), (t, 1, 1, 1))  # image px -> crop px
    return images, vertices, cams, crop, faces


def _draw(**kw):
    images, vertices, cams, crop, faces = _sphere_clip(kw.pop("t", 1))
    return export.overlay_frames(images, vertices, cams, crop, faces, **kw)


def _face_mask():
    """Pixels well inside the sphere's silhouette (radius 0.6 of the half-size: 77 px)."""
    i, j = np.mgrid[:SIZE, :SIZE]
    return (i + 0.5 - SIZE / 2) ** 2 + (j + 0.5 - SIZE / 2) ** 2 < 60**2


def test_landmarks_in_two_colours_at_their_positions():
    detected = np.full((1, 1, 2, 2), np.nan)
    detected[0, 0, 0] = [100.5, 110.5]
    model = np.full((1, 1, 2, 2), np.nan)
    model[0, 0, 1] = [150.5, 140.5]
    out = _draw(landmarks=detected, model_landmarks=model, style="wire")[0]
    det_rgb = np.round(np.asarray(export.DETECTED_LANDMARK_RGB) * 255)
    model_rgb = np.round(np.asarray(export.MODEL_LANDMARK_RGB) * 255)
    np.testing.assert_allclose(out[110, 100], det_rgb, atol=1)
    np.testing.assert_allclose(out[140, 150], model_rgb, atol=1)
    assert not np.allclose(out[140, 150], det_rgb, atol=30) and not np.allclose(out[110, 100], model_rgb, atol=30)
    # Where both fall on one point, the model's smaller dot sits on the detected one: both colours show.
    both = _draw(landmarks=detected[:, :, :1], model_landmarks=detected[:, :, :1], style="wire")[0]
    np.testing.assert_allclose(both[110, 100], model_rgb, atol=1)
    ring = both[108:113, 97:104].reshape(-1, 3)
    assert np.any(np.all(np.abs(ring.astype(int) - det_rgb) <= 1, axis=1))


def test_wire_leaves_most_of_the_face_unchanged_and_shaded_does_not():
    face = _face_mask()
    changed = {style: np.any(_draw(style=style)[0] != GREY, axis=-1)[face].mean() for style in export.OVERLAY_STYLES}
    assert changed["wire"] < 0.5, changed
    assert changed["shaded"] > 0.95 and changed["both"] > 0.95, changed
    # Shaded is translucent: the grey shows through (not the opaque mesh colour).
    shaded = _draw(style="shaded")[0][face].astype(float)
    opaque = render.overlay_mesh(np.full((SIZE, SIZE, 3), GREY, np.uint8), *_screen(), alpha=1.0, mode="solid")[face]
    assert np.abs(shaded - GREY).mean() < 0.6 * np.abs(opaque.astype(float) - GREY).mean()


def _screen():
    images, vertices, cams, crop, faces = _sphere_clip()
    return export.screen_vertices(vertices[0, 0], cams[0, 0], crop[0, 0], 224), faces


def test_labels_and_legend_are_drawn():
    out = _draw(nme=np.array([[2.5]]), view_names=["cam0"], frame_indices=[42], style="wire", t=1)[0]
    header, legend = out[:30, :120], out[-30:, :150]
    assert np.any(header != GREY) and np.any(legend != GREY)
    # The legend shows both landmark colours.
    for rgb in (export.DETECTED_LANDMARK_RGB, export.MODEL_LANDMARK_RGB):
        target = np.round(np.asarray(rgb) * 255)
        assert np.any(np.all(np.abs(legend.astype(int) - target) <= 2, axis=-1)), rgb
    # The header tells frames and values apart.
    other = _draw(nme=np.array([[7.25]]), view_names=["cam0"], frame_indices=[43], style="wire")[0]
    assert np.any(other[:30, :120] != header)
    # Tiny panels (shorter side below 120 px) are not labelled: text would cover the face.
    images, vertices, cams, crop, faces = _sphere_clip()
    small = export.overlay_frames(images, vertices, cams, crop, faces, nme=np.array([[2.5]]), max_side=64)[0]
    assert np.all(small[:6, :30] == GREY)


def test_side_by_side_doubles_the_width_image_left_mesh_right():
    single = _draw(style="shaded", t=2)
    pair = _draw(style="shaded", side_by_side=True, t=2, view_names=["v"])
    assert pair.shape == (2, SIZE, 2 * SIZE, 3) and single.shape == (2, SIZE, SIZE, 3)
    left, right = pair[0, :, :SIZE], pair[0, :, SIZE:]
    face = _face_mask()
    assert np.all(left[face] == GREY)  # the image, untouched where the face is
    assert np.abs(right[face].astype(int) - GREY).mean() > 40  # the opaque mesh
    assert np.all(np.abs(right[60:200, 5:30].astype(int) - round(GREY * 0.3)) <= 1)  # the image dimmed around it


def test_bad_style_is_refused_before_any_work():
    with pytest.raises(ValueError, match="overlay style"):
        _draw(style="solid")
    with pytest.raises(ValueError, match="overlay style"):
        OutputConfig(overlay_style="points")
    with pytest.raises(ValueError, match="overlay style"):
        demo_lib.DemoConfig(overlay_style="points")


def test_frame_nme_is_the_clip_nme_per_frame():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 100, (3, 1, 68, 2))
    pred = target + rng.normal(0, 1, target.shape)
    valid = np.array([[True], [False], [True]])
    target[2, 0, 5] = np.nan  # an undetected point is not scored
    per = frame_nme(pred, target, valid, (36, 45))
    assert per.shape == (3, 1) and np.isnan(per[1, 0]) and np.isfinite(per[[0, 2], 0]).all()
    d = np.linalg.norm(target[0, 0, 36] - target[0, 0, 45])
    np.testing.assert_allclose(per[0, 0], 100 * np.linalg.norm(pred[0, 0] - target[0, 0], axis=-1).mean() / d)


def test_flags_reach_the_configs():
    for define, argv in ((define_annotate_flags, ["annotate"]), (define_dataset_flags, ["annotate-dataset"])):
        fv = flags.FlagValues()
        define(fv)
        fv(argv + ["--overlay_style=shaded", "--side_by_side"])
        cfg = flags_lib.build(fv, OutputConfig)
        assert (cfg.overlay_style, cfg.side_by_side) == ("shaded", True)
    fv = flags.FlagValues()
    define_annotate_flags(fv)
    fv(["annotate"])
    assert flags_lib.build(fv, OutputConfig) == OutputConfig()
    assert OutputConfig().overlay_style == "wire" and not OutputConfig().side_by_side
    fv = flags.FlagValues()
    define_demo_flags(fv)
    fv(["demo", "--overlay_style=both", "--side_by_side"])
    cfg = flags_lib.build(fv, demo_lib.DemoConfig)
    assert (cfg.overlay_style, cfg.side_by_side) == ("both", True)
    fv = flags.FlagValues()
    define_annotate_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["annotate", "--overlay_style=solid"])


@pytest.mark.slow
def test_demo_writes_a_side_by_side_overlay(tmp_path):
    rc = cli.main(["neuface-jax", "demo", "--out", str(tmp_path), "--frames", "4", "--chunk_frames", "4",
                   "--epochs", "1", "--views", "mono", "--methods", "neuface", "--side_by_side",
                   "--overlay_style", "both"])
    assert rc == 0
    frames = iio.imread(tmp_path / "overlay.mp4")
    assert frames.shape[0] == 4 and frames.shape[2] == 2 * 224


@pytest.mark.slow
def test_annotate_writes_the_chosen_overlay(tmp_path):
    from neuface_jax.synthetic import synth

    clip = synth.synthesize_clip(seed=1, rig="front", config=synth.SynthConfig(num_frames=4, image_size=128))
    synth.write_clip(clip, tmp_path / "clip")
    model = flame_jax.demo_model()
    setup = annotate_lib.make_setup(
        SetupConfig(epochs=1, chunk_frames=4, contour="dynamic", refine_steps=0),
        encoder_config=encoder.EncoderConfig.small(
            n_shape=model.num_shape, n_expr=model.num_expression, image_size=32, small_widths=(8, 16),
            small_blocks=(1, 1), head_hidden=32),
        need_landmarker=False,
    )
    annotate_lib.annotate(
        [str(tmp_path / "clip" / "front.mp4")], out_dir=tmp_path / "out", setup=setup,
        prepare=PrepareConfig(frames=video.FrameRange()),
        output=OutputConfig(overlay_style="shaded", side_by_side=True),
        landmarks_file=tmp_path / "clip" / "landmarks.npz",
    )
    frames = iio.imread(tmp_path / "out" / "overlay.mp4")
    assert frames.shape[0] == 4 and frames.shape[1:] == (128, 256, 3)
