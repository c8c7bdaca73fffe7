"""Tests of neuface_jax.training.labels: labelled frames rebuilt from a real (tiny) annotate run.

The fixture annotates 4 frames of the shared MEAD clip with a tiny encoder and one epoch (plumbing, not fit
quality); it is made once per session (on disk under the session's temporary folder) and shared with
test_self_training.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import flame_jax
from neuface_jax import annotation as annotate_lib
from neuface_jax.core import encoder
from neuface_jax.media import crops, video
from neuface_jax.training import labels

MEAD = "videos/mead_M003_level_1_disgusted_015.mp4"
FRAMES = video.FrameRange(start=10, end=22, stride=3)  # source frames 10, 13, 16, 19
CROP = 32


def tiny_encoder_config():
    model = flame_jax.demo_model()
    return encoder.EncoderConfig.small(
        n_shape=model.num_shape, n_expr=model.num_expression, image_size=CROP, small_widths=(8, 16),
        small_blocks=(1, 1), head_hidden=32,
    )


@pytest.fixture(scope="session")
def annotated_clip(shared_data, landmarker_model, tmp_path_factory):
    """An ``annotate`` output folder of MEAD frames 10, 13, 16, 19 (made once per session)."""
    out = tmp_path_factory.getbasetemp() / "training_annotation" / "mead_tiny"
    if not (out / "params.npz").is_file():
        setup = annotate_lib.make_setup(
            annotate_lib.SetupConfig(face_landmarker=str(landmarker_model), epochs=1, chunk_frames=4, refine_steps=0),
            encoder_config=tiny_encoder_config(),
        )
        annotate_lib.annotate(
            shared_data / MEAD, out_dir=out, setup=setup,
            prepare=annotate_lib.PrepareConfig(frames=FRAMES, cache_dir=str(out.parent / "cache")),
            output=annotate_lib.OutputConfig(write_video=False),
        )
    return out


def _copy(src, dst, **clip_edits):
    shutil.copytree(src, dst)
    if clip_edits:
        m = json.loads((dst / "metrics.json").read_text())
        m["clip"].update(clip_edits)
        (dst / "metrics.json").write_text(json.dumps(m))
    return dst


# --------------------------------------------------------------------------- no data needed
def test_find_annotations_layouts(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "params.npz").write_bytes(b"")
    ds = tmp_path / "ds"
    for name, done in (("b", True), ("a", True), ("partial", False)):
        (ds / name).mkdir(parents=True)
        (ds / name / "params.npz").write_bytes(b"")
        if done:
            (ds / name / "done.json").write_text("{}")
    shots = tmp_path / "shots"
    for s in ("shot_01", "shot_00"):
        (shots / s).mkdir(parents=True)
        (shots / s / "params.npz").write_bytes(b"")
    (shots / "shots.json").write_text("{}")
    found = labels.find_annotations([one, ds, shots])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["one", "ds/a", "ds/b", "shots/shot_00", "shots/shot_01"]
    with pytest.raises(labels.AnnotationError, match="no such annotation folder"):
        labels.find_annotations([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(labels.AnnotationError, match="empty: no params.npz"):
        labels.find_annotations([tmp_path / "empty"])


# --------------------------------------------------------------------------- a real annotation
@pytest.mark.shared_data
def test_labelled_frames_are_the_annotated_crops_and_labels(annotated_clip, shared_data, tmp_path):
    f = labels.load_labelled_frames([annotated_clip], CROP)
    assert len(f) == 4 and f.images.shape == (4, CROP, CROP, 3) and f.images.dtype == np.uint8
    np.testing.assert_array_equal(f.frame_index, [10, 13, 16, 19])
    assert f.clip_ids == ("mead_tiny",) and f.clips[0].landmark_set == "ibug68" and f.clips[0].model.kind == "demo"
    # The crops equal what annotate's own preparation warps from the decoded frames.
    with np.load(annotated_clip / "params.npz") as p:
        transforms = p["crop_transforms"]
        for key, got in (("expr", f.expression), ("full_pose", f.pose), ("cam", f.cam),
                         ("predicted_landmarks2d", f.predicted_landmarks)):
            np.testing.assert_array_equal(got, p[key])
        np.testing.assert_array_equal(f.landmarks_mask, p["landmarks_mask"])
        np.testing.assert_array_equal(f.landmarks[f.landmarks_mask], p["landmarks2d"][p["landmarks_mask"]])
        np.testing.assert_array_equal(f.shape, p["shapes"])
    decoded = video.read_video(shared_data / MEAD, frames=FRAMES)
    ref = crops.prepare_clip(decoded.frames[0][:, None], np.zeros((4, 1, 68, 2)), transforms[:, None],
                             encoder_size=CROP, crop_size=224)
    np.testing.assert_array_equal(f.images, np.round(np.asarray(ref.images)[:, 0] * 255).astype(np.uint8))
    # Per clip, strided, capped; whole clips selected by id.
    copy = _copy(annotated_clip, tmp_path / "copy")
    parts = list(labels.iter_labelled_clips([annotated_clip, copy, annotated_clip], CROP, frame_stride=2))
    assert len(parts) == 2 and [len(p) for p in parts] == [2, 2]
    np.testing.assert_array_equal(parts[1].frame_index, [10, 16])
    capped = labels.load_labelled_frames([annotated_clip], CROP, max_frames=3)
    np.testing.assert_array_equal(capped.frame_index, [10, 16, 19])
    both = labels.LabelledFrames.concatenate(parts)
    assert both.clip_ids == ("mead_tiny", "copy") and set(both.clip_index) == {0, 1}
    assert len(both.select_clips(["copy"])) == 2


@pytest.mark.shared_data
def test_recrop_moves_the_labels_with_the_crop(annotated_clip, shared_data, landmarker_model):
    from neuface_jax.core import fit
    from neuface_jax.realtime import regressor, track

    base = labels.load_labelled_frames([annotated_clip], CROP)
    with np.load(annotated_clip / "params.npz") as p:
        transforms = p["crop_transforms"].astype(np.float64) * (CROP / 224.0)
    decoded = video.read_video(shared_data / MEAD, frames=FRAMES).frames[0]

    # A known re-crop: 0.8 of the side, moved right and down; None (keep) on the last frame.
    def smaller(image, m, size):
        cx, cy, side = regressor.box_of_transform(m, size)
        return None if np.array_equal(m, transforms[3]) else crops.box_to_transform((cx + 9, cy + 5, 0.8 * side), size)

    f = labels.load_labelled_frames([annotated_clip], CROP, recrop=smaller)
    for i in range(3):
        cx, cy, side = regressor.box_of_transform(transforms[i], CROP)
        new = crops.box_to_transform((cx + 9, cy + 5, 0.8 * side), CROP)
        np.testing.assert_array_equal(f.images[i], crops.warp_crop(decoded[i], new, CROP))
        # The same points in the original frame, whichever crop they are written in.
        back = lambda q, m: crops.apply_transform(crops.from_normalized(q, CROP), crops.invert_transform(m))  # noqa: E731
        np.testing.assert_allclose(back(f.predicted_landmarks[i], new), back(base.predicted_landmarks[i], transforms[i]),
                                   atol=1e-3)
        mask = f.landmarks_mask[i]
        np.testing.assert_allclose(back(f.landmarks[i][mask], new), back(base.landmarks[i][mask], transforms[i]),
                                   atol=1e-3)
    assert np.all(f.landmarks[~f.landmarks_mask] == 0)
    np.testing.assert_allclose(f.cam[:3, 0], base.cam[:3, 0] / 0.8, rtol=1e-5)
    for key in ("images", "cam", "landmarks", "predicted_landmarks"):  # the frame without a re-crop is unchanged
        np.testing.assert_array_equal(getattr(f, key)[3], getattr(base, key)[3])
    np.testing.assert_array_equal(f.pose, base.pose)
    # The moved camera projects the labelled mesh onto the moved points.
    face = fit.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    lmk = lambda fr: np.asarray(fit.evaluate_params(face, fr.shape, fr.expression, fr.pose, fr.cam)[1])  # noqa: E731
    zoom = np.array([1 / 0.8] * 3 + [1.0])[:, None, None]  # q → zoom·q + shift: differences scale by the zoom
    np.testing.assert_allclose(lmk(f) - f.predicted_landmarks, zoom * (lmk(base) - base.predicted_landmarks),
                               atol=1e-5)

    # A turned crop is not a zoom and shift: an error naming the folder.
    def turned(image, m, size):
        c, s = np.cos(0.1), np.sin(0.1)
        return np.concatenate([np.array([[c, -s], [s, c]]) @ m[:, :2], m[:, 2:]], 1)

    with pytest.raises(labels.AnnotationError, match=r"mead_tiny frame 10: a re-crop must differ .* zoom and a shift"):
        labels.load_labelled_frames([annotated_clip], CROP, recrop=turned)

    # Where the live tracker crops: the detector's box of each frame.
    with track.FaceDetector(landmarker_model) as det:
        d = labels.load_labelled_frames([annotated_clip], CROP, recrop=track.detector_recrop(det))
        for i in range(4):
            want = crops.box_to_transform(tuple(track.detection_box(det.detect(decoded[i])[0])), CROP)
            np.testing.assert_array_equal(d.images[i], crops.warp_crop(decoded[i], want, CROP))
            np.testing.assert_allclose(back(d.predicted_landmarks[i], want),
                                       back(base.predicted_landmarks[i], transforms[i]), atol=1e-3)
        far = track.detector_recrop(det, track.TrackConfig(min_iou=0.999))  # no detection overlaps that much
        np.testing.assert_array_equal(labels.load_labelled_frames([annotated_clip], CROP, recrop=far).images,
                                      base.images)


@pytest.mark.shared_data
def test_missing_moved_or_mismatched_videos_are_named(annotated_clip, shared_data, tmp_path):
    gone = "/nowhere/mead_M003_level_1_disgusted_015.mp4"
    moved = _copy(annotated_clip, tmp_path / "moved", input=[gone])
    with pytest.raises(labels.AnnotationError, match=r"moved.*input /nowhere/mead_M003.*missing"):
        labels.load_labelled_frames([moved], CROP)
    found = labels.load_labelled_frames([moved], CROP, video_dirs=[shared_data / "videos"], max_frames=1)
    assert len(found) == 1
    other = _copy(annotated_clip, tmp_path / "other", input=[str(shared_data / "videos/liveportrait_d20.mp4")])
    with pytest.raises(labels.AnnotationError, match=r"other.*\(480, 480\).*not the annotated video"):
        labels.load_labelled_frames([other], CROP)
    short_video = video.write_video(tmp_path / "short.mp4", np.zeros((12, 1080, 1920, 3), np.uint8))
    short = _copy(annotated_clip, tmp_path / "short", input=[str(short_video)])
    with pytest.raises(labels.AnnotationError, match=r"short.*frames \[13, 16, 19\].*not in the video"):
        labels.load_labelled_frames([short], CROP)


@pytest.mark.shared_data
def test_malformed_annotations_are_named(annotated_clip, tmp_path):
    bad = _copy(annotated_clip, tmp_path / "bad")
    (bad / "params.npz").write_bytes(b"not a zip")
    with pytest.raises(labels.AnnotationError, match=r"bad/params.npz: not a readable params.npz"):
        labels.load_labelled_frames([bad], CROP)
    nokey = _copy(annotated_clip, tmp_path / "nokey")
    with np.load(nokey / "params.npz") as p:
        arrays = {k: p[k] for k in p.files if k != "crop_transforms"}
    np.savez(nokey / "params.npz", **arrays)
    with pytest.raises(labels.AnnotationError, match=r"nokey/params.npz: no \['crop_transforms'\]"):
        labels.load_labelled_frames([nokey], CROP)
    nometrics = _copy(annotated_clip, tmp_path / "nometrics")
    (nometrics / "metrics.json").unlink()
    with pytest.raises(labels.AnnotationError, match=r"nometrics/metrics.json: missing"):
        labels.load_labelled_frames([nometrics], CROP)
    broken = _copy(annotated_clip, tmp_path / "broken")
    (broken / "metrics.json").write_text('{"clip": {}}')
    with pytest.raises(labels.AnnotationError, match=r"broken/metrics.json: not an annotation metrics.json"):
        labels.load_labelled_frames([broken], CROP)
    other_set = _copy(annotated_clip, tmp_path / "other_set", landmark_set="mediapipe105")
    with pytest.raises(labels.AnnotationError, match=r"other_set: fitted with landmarks mediapipe105"):
        labels.load_labelled_frames([annotated_clip, other_set], CROP)
