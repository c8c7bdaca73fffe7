"""The dataset runner (``neuface-jax annotate-dataset``): packing, buckets, atomic outputs, resume,
mid-group checkpoints, fault isolation, sharding, kill -9, two processes under jax.distributed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuface_jax import annotation as annotate
from neuface_jax import dataset
from neuface_jax.core import fit
from neuface_jax.dataset import manifest
from neuface_jax.media import video
from neuface_jax.core import encoder as encoder_lib
from tests.flame_jax.conftest import make_random_embedding68, make_random_model

ROOT = Path(__file__).resolve().parents[2]
SIZE = 64


# --------------------------------------------------------------------------- fixtures
def _write_clip(folder: Path, num_frames: int, seed: int, *, nan_frames=(), all_nan=False) -> manifest.ClipEntry:
    """A tiny clip: a textured mp4 and a landmarks.npz with 68 points around the centre."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, size=(SIZE, SIZE, 3))
    frames = [np.clip(base + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8) for _ in range(num_frames)]
    video.write_video(folder / "front.mp4", frames, fps=25.0)
    template = rng.normal(size=(68, 2)) * 8.0 + SIZE / 2
    drift = np.cumsum(rng.normal(size=(num_frames, 1, 2)) * 0.3, axis=0)
    pts = (template[None] + drift + rng.normal(size=(num_frames, 68, 2)) * 0.3)[:, None]  # [T, 1, 68, 2]
    valid = np.ones((num_frames, 1), bool)
    for t in nan_frames:
        pts[t] = np.nan
    if all_nan:
        pts[:] = np.nan
    np.savez(folder / "landmarks.npz", landmarks68=pts, visible68=np.ones(pts.shape[:3], bool), valid=valid,
             view_names=np.array(["front"]))
    return manifest.ClipEntry(
        clip_id=folder.name, kind="synth", inputs=(str(folder / "front.mp4"),), view_names=("front",),
        landmarks=str(folder / "landmarks.npz"), num_frames=num_frames, fps=25.0, meta={},
    )


LENGTHS = {"a": 5, "b": 9, "c": 16, "d": 20, "e": 7}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [_write_clip(root / cid, n, seed=i) for i, (cid, n) in enumerate(LENGTHS.items())]


@pytest.fixture(scope="module")
def setup():
    model, _ = make_random_model(n_shape=6, n_expr=4, num_v=300, num_f=500)
    emb = make_random_embedding68(500)
    ecfg = encoder_lib.EncoderConfig.small(
        n_shape=6, n_expr=4, image_size=16, small_widths=(4, 8), small_blocks=(1, 1), head_hidden=16
    )
    cfg = fit.FitConfig(num_epochs=3, chunk_frames=8, learning_rate=1e-3)
    return annotate.make_setup(
        annotate.SetupConfig(contour="dynamic", refine_steps=0), model=model, embedding=emb, encoder_config=ecfg,
        fit_config=cfg,
        need_landmarker=False,
    )


def _run(entries, out, setup, **kw):
    # One K and one set of buckets everywhere: the tests share two compiled shapes (16 and 32 frames).
    defaults = {"workers": 2, "checkpoint_every": 0, "clips_per_device": 2, "bucket_chunks": (2, 4)}
    cfg = dataset.DatasetConfig(**{**defaults, **kw.pop("config", {})})
    return dataset.run(entries, out, setup, cfg, **kw)


def _params(out, cid):
    with np.load(Path(out) / cid / "params.npz", allow_pickle=False) as f:
        return {k: f[k] for k in ("shapes", "expr", "pose", "cam")}


# --------------------------------------------------------------------------- units
def test_config_checks_and_normalizes():
    # bucket_frames: tests/neuface_jax/test_dataset_scheduler.py
    with pytest.raises(ValueError):
        dataset.DatasetConfig(clips_per_device=0)
    cfg = dataset.DatasetConfig(bucket_chunks=["2", "4"])  # as flags give them
    assert cfg.bucket_chunks == (2, 4) and hash(cfg) == hash(dataset.DatasetConfig(bucket_chunks=(2, 4)))
    assert not cfg.output.write_video  # datasets write no overlay by default


def test_clip_dir_rejects_escaping_ids(tmp_path):
    with pytest.raises(ValueError, match="unsafe"):
        dataset.clip_dir(tmp_path, "../x")
    assert dataset.clip_dir(tmp_path, "M003/angry/001") == tmp_path / "M003/angry/001"


# --------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_packed_run_matches_single_clip_fits(clips, setup, tmp_path):
    out = tmp_path / "out"
    summary = _run(clips, out, setup)
    assert summary.done == len(clips) and summary.failed == 0
    # Chunks of 8, buckets of 2 and 4 chunks: a, b, c, e -> 16 frames; d (3 chunks) -> 32. Groups of at
    # most K=2 clips (one device).
    assert summary.buckets == {"1v x 16f": 2, "1v x 32f": 1}
    for e in clips:
        assert dataset.is_done(out, e.clip_id)
        rec = json.loads((out / e.clip_id / dataset.DONE_FILE).read_text())
        assert rec["num_frames"] == LENGTHS[e.clip_id] and np.isfinite(rec["metrics"]["nme_percent"])
        doc = json.loads((out / e.clip_id / "metrics.json").read_text())
        assert doc["dataset"]["clip_id"] == e.clip_id and doc["clip"]["frames"] == LENGTHS[e.clip_id]
    # Packing, bucket padding and dummy slots do not change a clip's result.
    for e in (clips[3],):  # 20 frames: 24 in the single path, 32 in its bucket, beside a dummy slot
        prep = annotate.prepare(setup, list(e.inputs), view_names=list(e.view_names), landmarks_file=e.landmarks)
        ref = setup.optimizer.fit(prep.data, encoder=setup.encoder)
        got = _params(out, e.clip_id)
        assert got["expr"].shape[0] == LENGTHS[e.clip_id]
        np.testing.assert_allclose(got["expr"], ref.expression.reshape(-1, ref.expression.shape[-1]), atol=2e-4)
        np.testing.assert_allclose(got["cam"], ref.cam.reshape(-1, 3), atol=2e-4)
    report = json.loads((out / "report.json").read_text())
    assert report["completed"] == len(clips) and report["metrics"]["nme_percent"]["count"] == len(clips)
    assert "Worst clips by NME" in (out / "report.md").read_text()

    # Clips of other lengths in the same buckets reuse the compiled step (one chunk of K clips,
    # whatever the bucket) and the per-bucket export: nothing new is compiled for them.
    steps0, exports0 = fit._neuface_step_packed._cache_size(), fit._neuface_export_packed._cache_size()
    others = [_write_clip(tmp_path / "others" / f"o{n}", n, seed=40 + n) for n in (11, 23)]
    assert _run(others, tmp_path / "out2", setup, report=False).done == 2
    assert fit._neuface_step_packed._cache_size() == steps0
    assert fit._neuface_export_packed._cache_size() == exports0


def test_resume_skips_done_and_cleans_partial_outputs(clips, setup, tmp_path):
    out = tmp_path / "out"
    _run(clips[:2], out, setup)
    before = (out / "a" / "params.npz").stat().st_mtime_ns
    # A clip killed mid-write: a stale temporary file and params.npz but no record.
    (out / "c").mkdir()
    (out / "c" / ".params.npz.tmp").write_bytes(b"partial")
    (out / "c" / "params.npz").write_bytes(b"truncated")
    # A record whose file was damaged afterwards is not complete.
    with open(out / "b" / "params.npz", "ab") as fh:
        fh.write(b"x")
    summary = _run(clips, out, setup)
    assert summary.skipped_done == 1 and summary.done == 4
    assert (out / "a" / "params.npz").stat().st_mtime_ns == before
    assert not list(out.rglob("*.tmp"))
    assert all(dataset.is_done(out, e.clip_id) for e in clips)
    again = _run(clips, out, setup)
    assert again.skipped_done == len(clips) and again.done == 0


def test_failures_are_isolated_recorded_and_retried(clips, setup, tmp_path):
    bad_root = tmp_path / "bad"
    missing = manifest.ClipEntry(clip_id="missing", kind="video", inputs=(str(bad_root / "nope.mp4"),),
                                 view_names=("front",), landmarks=None, num_frames=None, fps=None, meta={})
    corrupt = _write_clip(bad_root / "corrupt", 6, seed=7)
    Path(corrupt.inputs[0]).write_bytes(os.urandom(3000))
    noface = _write_clip(bad_root / "noface", 6, seed=8, all_nan=True)
    holes = _write_clip(bad_root / "holes", 10, seed=9, nan_frames=(0, 4, 5))
    entries = [clips[0], missing, corrupt, noface, holes]
    out = tmp_path / "out"
    summary = _run(entries, out, setup)
    assert summary.done == 2 and summary.failed == 3
    fails = dataset.failed_clips(out)
    assert set(fails) == {"missing", "corrupt", "noface"}
    assert "nope.mp4" in fails["missing"]["message"] and fails["missing"]["stage"] == "prepare"
    assert "corrupt" in fails["corrupt"]["message"] and fails["corrupt"]["stage"] == "prepare"
    assert fails["noface"]["error"] == "NoFaceError"
    # Frames without landmarks are masked, never NaN in the outputs.
    p = _params(out, "holes")
    assert all(np.all(np.isfinite(a)) for a in p.values())
    # A plain re-run skips the failed clips; --retry_failed runs only them.
    again = _run(entries, out, setup)
    assert again.skipped_failed == 3 and again.skipped_done == 2 and again.done == 0
    _write_clip(bad_root / "corrupt", 6, seed=7)  # the file is repaired
    retry = _run(entries, out, setup, retry_failed=True)
    assert retry.done == 1 and retry.failed == 2 and retry.done_ids == ["corrupt"]
    assert set(dataset.failed_clips(out)) == {"missing", "noface"}
    report = json.loads((out / "report.json").read_text())
    assert report["failed"] == 2 and report["completed"] == 3


def test_shards_partition_the_manifest(clips, setup, tmp_path):
    out = tmp_path / "out"
    done = []
    for shard in range(3):
        s = _run(clips, out, setup, shard_id=shard, num_shards=3, report=False)
        assert s.failed == 0
        done += s.done_ids
    assert sorted(done) == sorted(e.clip_id for e in clips)
    assert len(list(out.glob("summary-*-of-00003.json"))) == 3


def test_refinement_runs_on_each_clip(clips, setup, tmp_path):
    # annotate-dataset's default path (the other tests here pass refine_steps=0): each clip's NeuFace result is
    # refined per frame before it is written (a few steps on this tiny model), recorded in its metrics.json.
    refined = dataclasses.replace(setup, config=dataclasses.replace(setup.config, refine_steps=40))
    e = clips[0]
    assert _run([e], tmp_path / "refined", refined, report=False).done == 1
    assert _run([e], tmp_path / "plain", setup, report=False).done == 1
    doc, plain = (json.loads((tmp_path / o / e.clip_id / "metrics.json").read_text()) for o in ("refined", "plain"))
    assert doc["clip"]["refine_steps"] == 40 and plain["clip"]["refine_steps"] == 0
    assert doc["nme_percent"] < plain["nme_percent"], (doc["nme_percent"], plain["nme_percent"])


class _Preempted(BaseException):
    """Stands for a pre-emption: not an Exception, so the runner does not record it as a failure."""


def test_group_checkpoint_resumes_mid_optimization(clips, setup, tmp_path, monkeypatch):
    entries = [clips[2], clips[3]]  # 16 and 20 frames -> one group of 2 in a 32-frame bucket
    cfg = {"checkpoint_every": 1, "checkpoint_min_frames": 0, "bucket_chunks": (4,)}
    ref_out = tmp_path / "ref"
    ref = _run(entries, ref_out, setup, config=cfg)
    assert ref.done == 2 and ref.checkpoint_saves == setup.fit_config.num_epochs - 1
    assert not any((ref_out / dataset.CHECKPOINT_DIR).iterdir())  # removed once the records exist

    out = tmp_path / "out"
    original = dataset.GroupCheckpoint.save

    def save_then_preempt(self, epochs_done, states):
        original(self, epochs_done, states)
        if epochs_done == 2:
            raise _Preempted()

    monkeypatch.setattr(dataset.GroupCheckpoint, "save", save_then_preempt)
    with pytest.raises(_Preempted):
        _run(entries, out, setup, config=cfg)
    monkeypatch.setattr(dataset.GroupCheckpoint, "save", original)
    groups = list((out / dataset.CHECKPOINT_DIR).iterdir())
    assert len(groups) == 1 and json.loads((groups[0] / "group.json").read_text())["epochs_done"] == 2
    assert not any(dataset.is_done(out, e.clip_id) for e in entries)
    resumed = _run(entries, out, setup, config=cfg)
    assert resumed.resumed_groups == 1 and resumed.done == 2
    for e in entries:
        a, b = _params(out, e.clip_id), _params(ref_out, e.clip_id)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=f"{e.clip_id} {k}")


# --------------------------------------------------------------------------- processes
def _cli(args, env_extra=None, **popen):
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "neuface_jax.cli", "annotate-dataset", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def cli_manifest(tmp_path_factory):
    """Six clips of one bucket (<= 8 frames) and the command's flags; the runs share a persistent
    compilation cache (--compilation_cache), so only the first process compiles."""
    root = tmp_path_factory.mktemp("cli_clips")
    entries = [_write_clip(root / f"clip{i}", 3 + i, seed=20 + i) for i in range(6)]
    path = root / "manifest.jsonl"
    manifest.write_manifest(entries, path)
    flags = ["--epochs=10", "--chunk_frames=8", "--contour=dynamic", "--refine_steps=0", "--workers=1", "--report=false",
             f"--compilation_cache={root / 'jax_cache'}"]
    return path, [e.clip_id for e in entries], flags


@pytest.mark.slow
def test_kill_minus_nine_then_resume_equals_uninterrupted(cli_manifest, tmp_path):
    path, ids, flags = cli_manifest
    ref = tmp_path / "ref"
    p = _cli([f"--manifest={path}", f"--out={ref}", *flags])
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log

    out = tmp_path / "out"
    p = _cli([f"--manifest={path}", f"--out={out}", *flags])
    deadline = time.time() + 600
    while not list(out.rglob(dataset.DONE_FILE)):
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_with = sorted(r["clip_id"] for r in dataset.completed_clips(out))
    assert 1 <= len(killed_with) < len(ids)
    p = _cli([f"--manifest={path}", f"--out={out}", *flags])
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log
    assert f"{len(killed_with)} skipped (done before)" in log
    assert not list(out.rglob("*.tmp"))
    for cid in ids:
        assert dataset.is_done(out, cid)
        a, b = _params(out, cid), _params(ref, cid)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=f"{cid} {k}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed(cli_manifest, tmp_path):
    path, ids, flags = cli_manifest
    out = tmp_path / "out"
    port = _free_port()
    procs = [
        _cli([f"--manifest={path}", f"--out={out}", *flags, "--distributed",
              f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"])
        for i in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
    assert "process 0 of 2" in logs[0] and "process 1 of 2" in logs[1]
    summaries = [json.loads((out / f"summary-{i:05d}-of-00002.json").read_text()) for i in range(2)]
    done = summaries[0]["done_ids"] + summaries[1]["done_ids"]
    assert sorted(done) == sorted(ids)  # every clip once, by exactly one process
    for s, i in zip(summaries, range(2)):
        assert all(manifest.shard_of(c, 2) == i for c in s["done_ids"])


class _Bar:
    """A stand-in for ``common.log.Progress`` that keeps what it was told."""

    def __init__(self, desc, total):
        self.desc, self.total, self.n, self.texts = desc, total, 0, []

    def set(self, done, total=None):
        self.n = done

    def postfix(self, text):
        self.texts.append(text)

    def close(self):
        pass


def test_progress_summary_and_report_command(clips, setup, tmp_path, capsys):
    from neuface_jax import cli

    bars = []
    out = tmp_path / "out"
    summary = _run(clips[:3], out, setup, progress=lambda d, t: bars.append(_Bar(d, t)) or bars[-1])
    assert bars[0].total == 3 and bars[0].n == 3
    assert "done=3 failed=0" in bars[0].texts[-1] and "clips/h" in bars[0].texts[-1]
    doc = json.loads((out / "summary-00000-of-00001.json").read_text())
    assert doc["done"] == 3 and doc["clips_per_hour"] > 0 and doc["seconds_by_stage"]["fit"] > 0
    assert summary.to_dict()["done_ids"] == ["a", "b", "c"]
    (out / "report.json").unlink()
    assert cli.main(["neuface-jax", "report", f"--out={out}"]) == 0
    assert "Completed clips: **3**" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["completed"] == 3
    assert cli.main(["neuface-jax", "report", f"--out={tmp_path / 'nothing'}"]) == 2
