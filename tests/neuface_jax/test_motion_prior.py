"""The motion prior: data loading from annotation folders, training and resuming, generation, metrics, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from neuface_jax import params as params_lib
from neuface_jax.media import export as export_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import evaluate as evaluate_lib
from neuface_jax.motion_prior import generate as generate_lib
from neuface_jax.motion_prior import model as model_lib
from neuface_jax.motion_prior import train as train_lib

LAYOUT = data_lib.Layout(n_expr=4, eyes=False, n_identity=3)
TINY = model_lib.PriorConfig(layout=LAYOUT, history=2, latent=4, hidden=16, layers=1)
TRAIN = train_lib.TrainConfig(steps=6, batch=4, rollout=4, checkpoint_every=3, val_fraction=0.3, seed=3)


def _motion(t: int, seed: int, e: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = np.arange(t)[:, None] / 25.0
    expr = (0.5 * np.sin(2 * np.pi * (0.5 + rng.random(e)) * time + rng.random(e) * 6)).astype(np.float32)
    pose = np.zeros((t, 15), np.float32)
    pose[:, 1] = 0.2 * np.sin(2 * np.pi * 0.3 * time[:, 0])
    pose[:, 6] = 0.1 + 0.1 * np.sin(2 * np.pi * 4 * time[:, 0])
    return expr, pose, rng.normal(size=8).astype(np.float32)


def _dataset(root: Path, clips: int = 4, frames: int = 60) -> Path:
    """An annotate-dataset-style folder: <root>/<clip>/{params.npz, metrics.json, done.json}."""
    for i in range(clips):
        expr, pose, shape = _motion(frames, i)
        d = root / f"clip_{i:02d}"
        data_lib.write_params(d / "params.npz", expr, pose, shape, fps=25.0)
        (d / "done.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("motion") / "ds")


# --------------------------------------------------------------------------- data
def _write_multiview(path: Path, t: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """A 2-view params.npz written by the annotation writer, with invalid frames 10..14 in view 0."""
    expr, pose, shape = _motion(t, 7)
    both_e = np.stack([expr, expr + 1.0], 1)
    both_p = np.stack([pose, pose], 1)
    valid = np.ones((t, 2), bool)
    valid[10:15, 0] = False
    result = SimpleNamespace(expression=both_e, pose=both_p, cam=np.ones((t, 2, 3)), shape=shape,
                             landmarks2d=np.zeros((t, 2, 68, 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    export_lib.write_params(path, result, view_names=["front", "side"], detected_landmarks=np.zeros((t, 2, 68, 2)),
                            landmarks_mask=np.ones((t, 2, 68), bool), crop_transforms=np.zeros((t, 2, 2, 3)),
                            valid=valid)
    export_lib.write_json(path.parent / "metrics.json", {"clip": {"fps": fps, "stride": 2}})
    return expr, valid[:, 0]


def test_find_and_load_annotation_folders(tmp_path):
    root = tmp_path / "ds"
    expr, valid = _write_multiview(root / "a" / "params.npz", 60, fps=60.0)
    (root / "a" / "done.json").write_text("{}")
    _write_multiview(root / "unfinished" / "params.npz", 20, fps=25.0)  # no done.json: skipped
    single = tmp_path / "single"
    _write_multiview(single / "params.npz", 30, fps=50.0)
    paths = data_lib.find_params([root, single])
    assert [p.parent.name for p in paths] == ["a", "single"]

    clip = data_lib.load_clip(paths[0])
    assert clip.fps == 30.0  # metrics.json: 60 fps, stride 2
    assert clip.view_name == "front" and clip.num_frames == 60
    np.testing.assert_allclose(clip.expression, expr, atol=1e-6)
    np.testing.assert_array_equal(clip.valid, valid)
    side = data_lib.load_clip(paths[0], view="side")
    np.testing.assert_allclose(side.expression, expr + 1.0, atol=1e-6)

    res = data_lib.resample(clip, 25.0)
    assert res.num_frames == 50  # 59 intervals of 1/30 s → 1.967 s → 50 frames at 25 fps
    assert data_lib.segments(res.valid) == [(0, 8), (13, 50)]
    assert not res.valid[8:13].any()


def test_windows_exclude_invalid_frames(tmp_path):
    _write_multiview(tmp_path / "c" / "params.npz", 40, fps=25.0)
    clip = data_lib.load_clip(tmp_path / "c", fps=25.0)
    norm = train_lib.fit_normalizer([clip], LAYOUT)
    w = train_lib.make_windows([clip], LAYOUT, norm, length=6)
    rows = w.starts[:, None] + np.arange(6)
    assert len(w.starts) == (10 - 6 + 1) + (40 - 15 - 6 + 1)
    assert clip.valid[rows].all()


def test_state_round_trip():
    expr, pose, _ = _motion(5, 1)
    clip = data_lib.MotionClip("x", 25.0, expr, pose, np.zeros(3), np.zeros((5, 3)), np.ones(5, bool))
    layout = data_lib.Layout(n_expr=8, eyes=True, n_identity=2)
    x = data_lib.clip_state(clip, layout)
    assert x.shape == (5, layout.size)
    e, p = data_lib.state_to_params(x, layout, pose[0])
    np.testing.assert_allclose(e[:, :6], expr)
    np.testing.assert_allclose(p, pose)


def test_split_by_clip_is_stable():
    clips = [data_lib.MotionClip(f"c{i}", 25.0, *(np.zeros((3, 1)), np.zeros((3, 15)), np.zeros(1)),
                                 np.zeros((3, 3)), np.ones(3, bool)) for i in range(10)]
    tr, va = data_lib.split_clips(clips, 0.3)
    tr2, va2 = data_lib.split_clips(list(reversed(clips)), 0.3)
    assert {c.clip_id for c in va} == {c.clip_id for c in va2} and va and tr
    assert not {c.clip_id for c in tr} & {c.clip_id for c in va}


# --------------------------------------------------------------------------- training
def _params(prior_dir):
    return jax.tree.leaves(train_lib.load_prior(prior_dir).params)


def test_train_resume_matches_uninterrupted(dataset, tmp_path):
    full = train_lib.train([dataset], tmp_path / "full", TINY, TRAIN)
    train_lib.train([dataset], tmp_path / "cut", TINY, TRAIN, stop_after=3)
    assert train_lib.load_prior(tmp_path / "cut").meta["result"]["steps_done"] == 3
    resumed = train_lib.train([dataset], tmp_path / "cut", TINY, TRAIN)
    assert full["steps_done"] == resumed["steps_done"] == 6
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "cut")):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    meta = json.loads((tmp_path / "full" / "prior.json").read_text())
    assert meta["data"]["val_clips"] and meta["data"]["train_clips"]
    assert not set(meta["data"]["val_clips"]) & set(meta["data"]["train_clips"])
    assert [h["step"] for h in meta["history"]] == [3, 6]
    with pytest.raises(ValueError, match="another model config"):
        train_lib.train([dataset], tmp_path / "full", model_lib.PriorConfig(layout=LAYOUT, hidden=8, layers=1), TRAIN)


@pytest.fixture(scope="module")
def prior(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior") / "p"
    train_lib.train([dataset], out, TINY, TRAIN)
    return train_lib.load_prior(out)


# --------------------------------------------------------------------------- generation
def test_generation_is_deterministic_per_seed(prior, dataset):
    clip = data_lib.load_clip(dataset / "clip_00")
    a = generate_lib.continue_clip(prior, clip, 5, seconds=0.4, samples=3, seed=11)
    b = generate_lib.continue_clip(prior, clip, 5, seconds=0.4, samples=2, seed=11)
    c = generate_lib.continue_clip(prior, clip, 5, seconds=0.4, samples=3, seed=12)
    assert a.states.shape == (3, 10, LAYOUT.size) and a.pose.shape == (3, 10, 15)
    np.testing.assert_array_equal(a.states[:2], b.states)  # sample i does not depend on the count
    assert not np.allclose(a.states, c.states)
    assert not np.allclose(a.states[0], a.states[1])
    assert np.isfinite(a.states).all()


def test_written_samples_load_like_annotations(prior, dataset, tmp_path):
    clip = data_lib.load_clip(dataset / "clip_01")
    res = generate_lib.continue_clip(prior, clip, 0, seconds=0.2, samples=2, seed=0)
    paths = generate_lib.write_continuations(res, tmp_path / "gen", render=1, size=32)
    assert (tmp_path / "gen" / "sample_000" / "mesh.mp4").stat().st_size > 0
    assert not (tmp_path / "gen" / "sample_001" / "mesh.mp4").exists()
    found = data_lib.find_params([tmp_path / "gen" / "sample_001"])
    back = data_lib.load_clip(found[0])
    assert back.num_frames == 6 and back.fps == 25.0 and back.valid.all()
    np.testing.assert_allclose(back.expression[0, :4], clip.expression[0, :4], atol=1e-6)  # the start frame first
    np.testing.assert_allclose(back.expression[1:, :4], res.expression[1], atol=1e-6)
    record = params_lib.load_params(found[0])
    assert record.num_frames == 6 and record.view_names == (clip.view_name,)
    with np.load(found[0]) as z:
        assert str(z["format"]) == export_lib.PARAMS_FORMAT
        assert {"cam", "pose", "expr", "shapes", "full_pose", "valid", "frame_index", "view_index"} <= set(z.files)
    assert len(paths) == 3


def test_ar_baseline_fits_a_linear_process():
    rng = np.random.default_rng(0)
    x = np.zeros((4000, 2))
    for t in range(2, len(x)):
        x[t] = 1.6 * x[t - 1] - 0.8 * x[t - 2] + 0.1 * rng.normal(size=2)
    norm = train_lib.Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32), np.ones(2, np.float32),
                                np.zeros(1, np.float32), np.ones(1, np.float32))
    ar = generate_lib.fit_ar([x], norm, order=2, ridge=0.0)
    np.testing.assert_allclose(np.diag(ar.coef[:2]), [1.6, 1.6], atol=0.05)
    np.testing.assert_allclose(np.diag(ar.coef[2:]), [-0.8, -0.8], atol=0.05)
    s = generate_lib.sample_ar(ar, x[:2], num_frames=50, num_samples=3, seed=1)
    assert s.shape == (3, 50, 2)
    np.testing.assert_array_equal(s, generate_lib.sample_ar(ar, x[:2], num_frames=50, num_samples=3, seed=1))


# --------------------------------------------------------------------------- metrics
def _ref(seqs, layout=LAYOUT):
    return evaluate_lib.Reference([np.asarray(s, np.float32) for s in seqs], [np.zeros(3)] * len(seqs), layout, 25.0,
                                  evaluate_lib.Face.demo())


def test_metrics_on_hand_built_cases():
    rng = np.random.default_rng(0)
    t = 126
    smooth = [np.cumsum(rng.normal(size=(t, LAYOUT.size)) * 0.01, 0) for _ in range(4)]
    ref = _ref(smooth)
    real = evaluate_lib.reference_stats(ref)
    starts = np.stack([s[0] for s in smooth])
    held = np.stack([generate_lib.hold(s[:1], num_frames=t - 1, num_samples=3) for s in smooth])
    same = np.stack([np.stack([s[1:]] * 2) for s in smooth])
    jitter = same + rng.normal(size=same.shape) * 0.05
    r_hold = evaluate_lib.score(held, starts, ref.shapes, ref, real)
    r_same = evaluate_lib.score(same, starts, ref.shapes, ref, real)
    r_jit = evaluate_lib.score(jitter, starts, ref.shapes, ref, real)
    assert r_hold["diversity"] == 0.0 and r_hold["jerk_ratio"] < 1e-6
    assert r_same["diversity"] == 0.0
    assert abs(r_same["jerk_ratio"] - 1.0) < 1e-6 and r_same["jerk_spectrum"] < 1e-6
    assert r_jit["jerk_ratio"] > 3.0 and r_jit["jerk_spectrum"] > r_same["jerk_spectrum"]
    assert r_same["fd"] < 0.05 * r_hold["fd"]
    assert r_same["w_expr"] < 1e-6 < r_jit["w_expr"]
    assert 0.5 < r_same["continuity"] < 2.0 and r_hold["continuity"] < 1e-6
    assert r_jit["diversity"] > 0.0


def test_frechet_and_blinks():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 3))
    assert evaluate_lib.frechet(a, a) < 1e-6
    assert abs(evaluate_lib.frechet(a, a + [2.0, 0, 0]) - 4.0) < 1e-6
    gap = np.ones(250)
    gap[[20, 21, 100, 200, 201, 202]] = 0.1  # three closures in 10 s at 25 fps
    assert evaluate_lib.blink_rate(gap, [250], open_gap=1.0, fps=25.0) == pytest.approx(18.0)


def test_lid_gap_proxy_sees_blinks():
    layout = data_lib.Layout(n_expr=2, eyes=False, n_identity=1)
    x = np.zeros((2, layout.size), np.float32)
    x[1, 1] = 2.5  # the demo head's "blink" expression
    lips, lids = evaluate_lib.gaps([x], [np.zeros(1)], layout, evaluate_lib.Face.demo())
    assert lids[0] > 0 and lids[1] < 0.5 * lids[0]
    assert lips.shape == (2,)


# --------------------------------------------------------------------------- CLI
def test_cli_round_trip(dataset, tmp_path):
    from neuface_jax.cli import main

    p = tmp_path / "prior"
    tiny = ["--n_expr", "4", "--noeyes", "--n_identity", "3", "--history", "2", "--latent", "4", "--hidden", "16",
            "--layers", "1", "--batch", "4", "--rollout", "4", "--checkpoint_every", "2", "--val_fraction", "0.3"]
    command = ["neuface-jax", "train-motion-prior", "--data", str(dataset), "--out", str(p), *tiny]
    assert main([*command, "--steps", "2"]) == 0
    assert main([*command, "--steps", "4"]) == 0  # resumes at step 2
    assert train_lib.load_prior(p).meta["result"]["steps_done"] == 4
    gen = tmp_path / "gen"
    start = f"{dataset / 'clip_02' / 'params.npz'}:3"
    assert main(["neuface-jax", "generate-motion", "--prior", str(p), "--start", start, "--seconds", "0.2",
                 "--samples", "2", "--render", "0", "--out", str(gen)]) == 0
    assert len(data_lib.find_params([gen / "sample_000"])) == 1
    out = tmp_path / "eval.json"
    assert main(["neuface-jax", "evaluate-motion", "--prior", f"tiny={p}", "--data", str(dataset), "--train_data",
                 str(dataset), "--seconds", "0.4", "--samples", "2", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["rows"]) == {"tiny", "hold start", "linear AR(2)", "held-out data"}
    assert doc["rows"]["hold start"]["diversity"] == 0.0


def test_decoder_variance_likelihood_and_sampling():
    mu, target = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    plain = model_lib.reconstruction(mu, target)
    np.testing.assert_allclose(plain, [1.5, 1.5])
    with_var = np.concatenate([mu, np.full((2, 3), np.log(4.0), np.float32)], -1)  # variance 4
    np.testing.assert_allclose(model_lib.reconstruction(with_var, target), 0.5 * 3 * (1 / 4 + np.log(4.0)), rtol=1e-5)
    key = jax.random.PRNGKey(0)
    np.testing.assert_array_equal(model_lib.sample_change(mu, key, 3), mu)  # no variance: the mean
    draws = model_lib.sample_change(np.repeat(with_var, 2000, 0), key, 3)
    assert abs(float(np.std(draws)) - 2.0) < 0.1
