"""The Ray engine (``annotate-dataset --engine ray``): same outputs as the local engine, a killed actor's
group run again (every clip done once), runs resumed by the other engine, the command line.

The tests that start Ray are marked ``ray`` (and ``slow``: a one-node Ray start on 2 cores takes
seconds); they need the ``ray`` extra (``pip install -e ".[ray]"``) and fail without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from neuface_jax import annotation, dataset
from neuface_jax.dataset import manifest, ray_engine, records
from tests.neuface_jax.test_dataset import _params, _run, _write_clip, setup  # noqa: F401 - setup is a fixture

ROOT = Path(__file__).resolve().parents[2]
LENGTHS = {"r1": 5, "r2": 9, "r3": 16, "r4": 20, "r5": 7}
CONFIG = {"workers": 1, "checkpoint_every": 0, "clips_per_device": 2, "bucket_chunks": (2, 4)}


# --------------------------------------------------------------------------- without Ray
def test_engine_config_actor_plan_and_summary_merge_without_ray():
    with pytest.raises(ValueError):
        ray_engine.EngineConfig(engine="spark")
    with pytest.raises(ValueError):
        ray_engine.EngineConfig(ray_actors=0)
    assert hash(ray_engine.EngineConfig()) == hash(ray_engine.EngineConfig(engine="local"))
    default = ray_engine.EngineConfig(engine="ray")
    # One fitting actor per GPU, one CPU each; the preparation actors share the CPUs left.
    assert ray_engine.plan_actors({"CPU": 16.0, "GPU": 4.0}, default, 4) == ray_engine.ActorPlan(4, 1.0, 4, 1.0)
    assert ray_engine.plan_actors({"CPU": 2.0}, default, 1) == ray_engine.ActorPlan(1, 0.0, 1, 1.0)
    assert ray_engine.plan_actors({"CPU": 2.0}, default, 4).cpus_per_prepare_actor == 0.25
    two = ray_engine.EngineConfig(engine="ray", ray_actors=2, ray_gpus_per_actor=0.5)
    assert ray_engine.plan_actors({"CPU": 8.0, "GPU": 1.0}, two, 2) == ray_engine.ActorPlan(2, 0.5, 2, 1.0)

    total = records.RunSummary(shard_id=0, num_shards=1, clips_in_shard=3, done=1, done_ids=["a"],
                               seconds_by_stage={"fit": 1.0}, buckets={"1v x 16f": 1}, groups=1)
    part = records.RunSummary(shard_id=0, num_shards=1, clips_in_shard=0, done=1, failed=1, done_ids=["b"],
                              failed_ids=["c"], seconds_by_stage={"fit": 2.0, "write": 0.5},
                              buckets={"1v x 16f": 1}, groups=1)
    ray_engine.merge_summary(total, part)
    assert (total.done, total.failed, total.groups, total.clips_in_shard) == (2, 1, 2, 3)
    assert total.done_ids == ["a", "b"] and total.failed_ids == ["c"]
    assert total.seconds_by_stage == {"fit": 3.0, "write": 0.5} and total.buckets == {"1v x 16f": 2}


def test_core_install_does_not_import_ray():
    code = ("import sys; from neuface_jax.cli import annotate_dataset; from neuface_jax.dataset import ray_engine; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)


# --------------------------------------------------------------------------- with Ray
@pytest.fixture(scope="module")
def ray_session():
    ray = ray_engine.import_ray()  # fails (never skips) without the ray extra
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray_clips")
    return [_write_clip(root / cid, n, seed=40 + i) for i, (cid, n) in enumerate(LENGTHS.items())]


@pytest.fixture(scope="module")
def local_ref(ray_clips, setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("local_ref")
    summary = _run(ray_clips, out, setup, config=CONFIG)
    assert summary.done == len(ray_clips)
    return out, summary


def _same_outputs(out, ref, ids):
    assert not list(Path(out).rglob("*.tmp"))
    for cid in ids:
        assert dataset.is_done(out, cid)
        a, b = _params(out, cid), _params(ref, cid)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=f"{cid} {k}")
        ra, rb = (json.loads((Path(d) / cid / dataset.DONE_FILE).read_text()) for d in (out, ref))
        for key in ("clip_id", "status", "num_frames", "views", "group"):
            assert ra[key] == rb[key], (cid, key)
        assert sorted(ra["files"]) == sorted(rb["files"])
        for m, v in rb["metrics"].items():
            np.testing.assert_allclose(ra["metrics"][m], v, rtol=1e-4, atol=1e-6, err_msg=f"{cid} {m}")


def _ray_run(entries, out, setup, **kw):
    cfg = dataset.DatasetConfig(**CONFIG)
    return ray_engine.run(entries, out, setup, cfg, ray_engine.EngineConfig(engine="ray"), **kw)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_outputs_equal_the_local_engine(ray_session, ray_clips, setup, local_ref, tmp_path):
    ref, ref_summary = local_ref
    out = tmp_path / "out"
    summary = _ray_run(ray_clips, out, setup)
    assert summary.done == len(ray_clips) and summary.failed == 0 and summary.retries == 0
    assert summary.buckets == ref_summary.buckets and summary.groups == ref_summary.groups
    assert summary.done_ids == sorted(LENGTHS)
    _same_outputs(out, ref, LENGTHS)
    doc = json.loads((out / "summary-00000-of-00001.json").read_text())
    assert doc["exit_code"] == 0 and doc["seconds_by_stage"]["fit"] > 0 and doc["seconds_by_stage"]["prepare"] > 0
    assert json.loads((out / "report.json").read_text())["completed"] == len(ray_clips)


def _wait_for_a_record(out: Path, alive) -> None:
    """Returns once a clip's completion record exists (``alive()`` must hold meanwhile)."""
    deadline = time.time() + 300
    while not list(out.rglob(dataset.DONE_FILE)):
        assert alive() and time.time() < deadline
        time.sleep(0.01)


def _fit_actor_pids() -> list[int]:
    """Processes whose title names the fitting actor (Ray titles its workers ``ray::<Class>...``)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::FitActor"):
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_killed_actor_its_group_runs_again_every_clip_done_once(ray_session, ray_clips, setup, local_ref, tmp_path):
    ref, _ = local_ref
    out = tmp_path / "out"
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(summary=_ray_run(ray_clips, out, setup)))
    t.start()
    _wait_for_a_record(out, t.is_alive)  # the first group is being written
    victims = _fit_actor_pids()
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    t.join(timeout=600)
    summary = result["summary"]
    assert summary.retries >= 1  # the group(s) the dead actor held were sent again
    assert summary.done == len(ray_clips) and summary.failed == 0 and summary.done_ids == sorted(LENGTHS)
    assert not (out / dataset.FAILURES_FILE).exists()
    assert json.loads((out / "summary-00000-of-00001.json").read_text())["retries"] == summary.retries
    pids = {json.loads((out / cid / dataset.DONE_FILE).read_text())["pid"] for cid in LENGTHS}
    assert victims[0] in pids and len(pids) == 2  # some clips by the killed actor, the rest by its restart
    _same_outputs(out, ref, LENGTHS)


CLI_FLAGS = ["--epochs=3", "--chunk_frames=8", "--contour=dynamic", "--refine_steps=0", "--workers=1", "--report=false",
             "--clips_per_device=1", "--bucket_chunks=2,4", "--checkpoint_every=0"]


def _cli_setup():
    """The command's setup for ``CLI_FLAGS`` (demo head, packaged encoder), to resume its runs in-process."""
    return annotation.make_setup(annotation.SetupConfig(epochs=3, chunk_frames=8, contour="dynamic", refine_steps=0),
                                 need_landmarker=False)


def _cli(args, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "neuface_jax.cli", "annotate-dataset", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.ray
@pytest.mark.slow
def test_local_run_killed_then_resumed_by_the_ray_engine(ray_session, ray_clips, setup, tmp_path):
    path = tmp_path / "manifest.jsonl"
    manifest.write_manifest(ray_clips, path)
    out = tmp_path / "out"
    p = _cli([f"--manifest={path}", f"--out={out}", *CLI_FLAGS])
    _wait_for_a_record(out, lambda: p.poll() is None)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {r["clip_id"] for r in dataset.completed_clips(out)}
    assert 1 <= len(before) < len(ray_clips)
    cfg = dataset.DatasetConfig(workers=1, clips_per_device=1, bucket_chunks=(2, 4), checkpoint_every=0)
    summary = ray_engine.run(path, out, _cli_setup(), cfg, ray_engine.EngineConfig(engine="ray"), report=False)
    assert summary.skipped_done == len(before) and summary.done == len(ray_clips) - len(before)
    assert summary.exit_code == 0 and not list(out.rglob("*.tmp"))
    assert all(dataset.is_done(out, e.clip_id) for e in ray_clips)


@pytest.mark.ray
@pytest.mark.slow
def test_command_on_ray_killed_then_resumed_by_the_local_engine(ray_clips, tmp_path):
    """``--engine ray`` from the command line (its own one-node cluster); the whole process group
    killed (driver, Ray and actors: a lost machine); the local engine finishes the rest."""
    path = tmp_path / "manifest.jsonl"
    manifest.write_manifest(ray_clips, path)
    out = tmp_path / "out"
    p = _cli([f"--manifest={path}", f"--out={out}", *CLI_FLAGS, "--engine=ray"], start_new_session=True)
    _wait_for_a_record(out, lambda: p.poll() is None)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = {r["clip_id"] for r in dataset.completed_clips(out)}
    assert 1 <= len(before) < len(ray_clips)
    cfg = dataset.DatasetConfig(workers=1, clips_per_device=1, bucket_chunks=(2, 4), checkpoint_every=0)
    summary = dataset.run(path, out, _cli_setup(), cfg, report=False)  # the killed run's lease is stale
    assert summary.skipped_done == len(before) and summary.done == len(ray_clips) - len(before)
    assert summary.exit_code == 0 and not list(out.rglob("*.tmp"))
    assert all(dataset.is_done(out, e.clip_id) for e in ray_clips)
