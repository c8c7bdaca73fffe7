"""Dataset runs that tell the truth: absolute paths, exit statuses, transient failures retried, a
lease on the output folder, writability checked first, reserved and nested clip ids refused, no
outputs through symbolic links, unreadable manifests named."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neuface_jax import annotation, cli, dataset
from neuface_jax.dataset import manifest, outdir, records
from neuface_jax.dataset import runner as runner_lib
from tests.neuface_jax.test_dataset import _run, _write_clip, setup  # noqa: F401 - setup is a fixture


def _missing(cid: str, root: Path) -> manifest.ClipEntry:
    """A clip whose video is missing (with landmarks named, so no landmark detector is needed)."""
    return manifest.ClipEntry(clip_id=cid, kind="video", inputs=(str(root / f"{cid}-nope.mp4"),),
                              view_names=("front",), landmarks=str(root / f"{cid}-nope.npz"))


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel_clips")
    return {"a": _write_clip(root / "a", 9, seed=1), "b": _write_clip(root / "b", 12, seed=2),
            "noface": _write_clip(root / "noface", 6, seed=3, all_nan=True), "root": root}


def _manifest(tmp_path: Path, entries) -> Path:
    path = tmp_path / "manifest.jsonl"
    manifest.write_manifest(entries, path)
    return path


def _annotate_dataset(args, setup, monkeypatch):
    """The command in this process, with the test's small model instead of the packaged one."""
    monkeypatch.setattr(annotation, "make_setup", lambda *a, **k: setup)
    return cli.main(["neuface-jax", "annotate-dataset", "--clips_per_device=2", "--bucket_chunks=2,4",
                     "--workers=1", "--checkpoint_every=0", "--report=false", *args])


# --------------------------------------------------------------------------- 1. absolute paths
def test_relative_out_keeps_checkpointed_clips(clip_root, setup, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = _run([clip_root["a"]], "rel_out", setup, config={"checkpoint_every": 1, "checkpoint_min_frames": 0})
    assert summary.failed == 0 and summary.done == 1 and summary.checkpoint_saves > 0
    assert dataset.is_done(tmp_path / "rel_out", "a")


# --------------------------------------------------------------------------- 2. exit statuses
def test_summary_exit_codes():
    s = records.RunSummary(shard_id=0, num_shards=1, clips_in_shard=3, done=3)
    assert s.exit_code == 0 and s.to_dict()["outcome"] == dataset.OUTCOMES[0]
    assert records.RunSummary(0, 1, 3, done=2, failed=1).exit_code == 3
    assert records.RunSummary(0, 1, 3, skipped_done=2, skipped_failed=1).exit_code == 3  # failed before counts
    assert records.RunSummary(0, 1, 3, failed=2, skipped_failed=1).exit_code == 4
    assert records.RunSummary(0, 1, 0).exit_code == 0


def test_command_exit_status_when_clips_fail(clip_root, setup, tmp_path, monkeypatch, capsys):
    root = clip_root["root"]
    some = _manifest(tmp_path / "some", [clip_root["a"], _missing("gone", root)])
    assert _annotate_dataset([f"--manifest={some}", f"--out={tmp_path / 'out1'}"], setup, monkeypatch) == 3
    doc = json.loads((tmp_path / "out1" / "summary-00000-of-00001.json").read_text())
    assert doc["exit_code"] == 3 and "some clips" in doc["outcome"] and doc["done"] == 1
    everything = _manifest(tmp_path / "all", [_missing("gone", root), _missing("lost", root)])
    assert _annotate_dataset([f"--manifest={everything}", f"--out={tmp_path / 'out2'}"], setup, monkeypatch) == 4
    assert json.loads((tmp_path / "out2" / "summary-00000-of-00001.json").read_text())["exit_code"] == 4
    assert "exit status 4" in capsys.readouterr().err
    # A resume that skips the recorded failures does not turn them into success.
    assert _annotate_dataset([f"--manifest={some}", f"--out={tmp_path / 'out1'}"], setup, monkeypatch) == 3
    with pytest.raises(SystemExit):
        cli.main(["neuface-jax", "annotate-dataset", "--help"])
    assert "Exit status" in capsys.readouterr().out


# --------------------------------------------------------------------------- 3. transient failures
def test_failure_class():
    assert records.failure_class(OSError(errno.ENOSPC, "No space left on device")) == "transient"
    assert records.failure_class(OSError(errno.EIO, "Input/output error")) == "transient"
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as e:
            raise RuntimeError("orbax could not save") from e
    except RuntimeError as wrapped:
        assert records.failure_class(wrapped) == "transient"
    assert records.failure_class(FileNotFoundError(errno.ENOENT, "nope")) == "permanent"
    assert records.failure_class(FloatingPointError("non-finite")) == "permanent"


def test_transient_failures_run_again_on_a_plain_resume(clip_root, setup, tmp_path, monkeypatch):
    entries = [clip_root["a"], clip_root["b"], clip_root["noface"]]
    out = tmp_path / "out"
    write_outputs = annotation.write_outputs

    def disk_full_for_a(setup, clip, result, folder, *a, **k):
        if Path(folder).name == "a":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "params.npz"))
        return write_outputs(setup, clip, result, folder, *a, **k)

    monkeypatch.setattr(annotation, "write_outputs", disk_full_for_a)
    first = _run(entries, out, setup, report=False)
    assert (first.done, first.failed) == (1, 2)
    classes = {r["clip_id"]: r["class"] for r in dataset.read_failures(out)}
    assert classes == {"a": "transient", "noface": "permanent"}
    monkeypatch.setattr(annotation, "write_outputs", write_outputs)  # the disk has space again
    again = _run(entries, out, setup, report=False)
    assert again.done_ids == ["a"] and again.skipped_failed == 1 and again.retried_transient == 1
    assert set(dataset.failed_clips(out)) == {"noface"}


# --------------------------------------------------------------------------- 4. the lease on --out
def test_a_second_run_on_the_same_out_refuses(clip_root, setup, tmp_path, monkeypatch):
    out = tmp_path / "out"
    entries = [_missing("gone", clip_root["root"])]  # no fitting: the runs only prepare (and fail)
    started, go_on = threading.Event(), threading.Event()
    prepare = runner_lib.prepare_entry
    calls = []

    def first_one_waits(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            started.set()
            go_on.wait(60)
        return prepare(*a, **k)

    monkeypatch.setattr(runner_lib, "prepare_entry", first_one_waits)
    first = threading.Thread(target=_run, args=(entries, out, setup), kwargs={"report": False})
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(dataset.OutputLockedError, match=f"host {socket.gethostname()} pid {os.getpid()}"):
            _run(entries, out, setup, report=False)
        with pytest.raises(dataset.OutputLockedError):  # another sharding would overlap the clips
            _run(entries, out, setup, shard_id=1, num_shards=2, report=False)
    finally:
        go_on.set()
        first.join(60)
    assert len(calls) == 1  # the refused runs did no work
    assert not list((out / "_locks").glob("shard-*.json"))  # released at the end
    _run(entries, out, setup, report=False)  # and the folder is free again


def _holder(**kw):
    now = time.time()
    return {"host": socket.gethostname(), "where": outdir.this_host(), "pid": os.getpid(), "shard_id": 0,
            "num_shards": 1, "token": "t", "started": now, "expires": now + 300, **kw}


def test_stale_leases_are_taken_over_and_shards_share_a_folder(tmp_path):
    out = tmp_path / "out"
    outdir.prepare_output(out)
    locks = out / "_locks"
    locks.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = locks / "shard-00000-of-00001.json"
    lock.write_text(json.dumps(_holder(pid=dead.pid)))  # a killed run of this host
    outdir.acquire(out, 0, 1).release()
    elsewhere = {"host": "elsewhere", "where": "elsewhere", "pid": dead.pid}
    lock.write_text(json.dumps(_holder(**elsewhere, expires=time.time() - 1)))  # a lapsed lease
    outdir.acquire(out, 0, 1).release()
    lock.write_text(json.dumps(_holder(**elsewhere)))  # a live run on another host: its pid means nothing here
    with pytest.raises(dataset.OutputLockedError, match=f"host elsewhere pid {dead.pid}"):
        outdir.acquire(out, 0, 1)
    lock.write_text("{torn")  # unreadable: stale
    outdir.acquire(out, 0, 1).release()
    # The processes of a distributed run (or separate shard jobs) share the folder.
    with outdir.acquire(out, 0, 2), outdir.acquire(out, 1, 2):
        with pytest.raises(dataset.OutputLockedError):
            outdir.acquire(out, 1, 2)
        with pytest.raises(dataset.OutputLockedError):
            outdir.acquire(out, 0, 1)
    assert not list(locks.glob("shard-*.json"))


def test_lease_is_renewed_while_the_run_lasts(tmp_path):
    out = outdir.prepare_output(tmp_path / "out")
    with outdir.acquire(out, 0, 1, lease_seconds=0.2) as lease:
        first = json.loads(lease.path.read_text())["expires"]
        time.sleep(0.5)
        assert json.loads(lease.path.read_text())["expires"] > first + 0.1
        assert not outdir.is_stale(json.loads(lease.path.read_text()), now=time.time(), host=outdir.this_host())


# --------------------------------------------------------------------------- 5. writability first
@pytest.fixture
def read_only_dir(tmp_path):
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    d = Path("/sys/kernel")  # root writes anywhere a mode allows: a kernel file system refuses it
    if not d.is_dir() or os.access(d, os.W_OK) and _can_create(d):
        pytest.skip("no folder this user cannot write to")
    yield d


def _can_create(d: Path) -> bool:
    try:
        (d / ".probe").touch()
    except OSError:
        return False
    (d / ".probe").unlink()
    return True


def test_read_only_out_is_refused_before_any_work(clip_root, setup, read_only_dir, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(runner_lib, "prepare_entry", lambda *a, **k: calls.append(a) or pytest.fail("prepared"))
    with pytest.raises(dataset.OutputError, match="not writable"):
        _run([clip_root["a"]], read_only_dir, setup)
    assert not calls
    path = _manifest(tmp_path, [clip_root["a"]])
    monkeypatch.setattr(annotation, "make_setup", lambda *a, **k: pytest.fail("model built"))
    assert cli.main(["neuface-jax", "annotate-dataset", f"--manifest={path}", f"--out={read_only_dir}"]) == 1
    assert f"{read_only_dir} is not writable" in capsys.readouterr().err


# --------------------------------------------------------------------------- 6. clip ids and symlinks
@pytest.mark.parametrize("bad", ["summary-00000-of-00001.json", "report.json", "report.md", "failures.jsonl",
                                 "_checkpoints", "_locks/x", ".hidden"])
def test_reserved_clip_ids_are_refused_naming_the_line(tmp_path, bad):
    path = tmp_path / "m.jsonl"
    lines = [{"clip_id": "ok", "kind": "video", "inputs": ["ok.mp4"]}, {"clip_id": bad, "kind": "video",
                                                                       "inputs": ["x.mp4"]}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError, match=rf"{path}:2: clip_id '{bad}' is reserved"):
        manifest.read_manifest(path)


def test_nested_clip_ids_are_refused_naming_both_lines(tmp_path, setup):
    path = tmp_path / "m.jsonl"
    lines = [{"clip_id": "c1", "kind": "video", "inputs": ["c1.mp4"]},
             {"clip_id": "c2", "kind": "video", "inputs": ["c2.mp4"]},
             {"clip_id": "c1/params.npz", "kind": "video", "inputs": ["x.mp4"]}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(ValueError, match=rf"{path}:3: clip_id 'c1/params.npz' lies inside the folder of clip "
                                         rf"'c1' \({path}:1\)"):
        manifest.read_manifest(path)
    # Entries given directly are checked too, before the output folder is touched.
    entries = [_missing("c1", tmp_path), _missing("c1/params.npz", tmp_path)]
    with pytest.raises(ValueError, match="lies inside"):
        _run(entries, tmp_path / "out", setup)
    assert not (tmp_path / "out").exists()


def test_built_manifests_avoid_reserved_and_nested_ids(tmp_path):
    root = tmp_path / "data"
    for rel in ("_private.mp4", "report.json.mp4", "summary-1.json.mp4", "a.mp4", "a/b.mp4", "ok/c.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    entries = manifest.build_manifest(root)
    ids = [e.clip_id for e in entries]
    assert "a/b" in ids and "ok/c" in ids and "a" not in ids and len(ids) == 6
    assert all(cid.startswith("clip-") for cid in ids if "private" in cid or "json" in cid)
    back = manifest.read_manifest(manifest.write_manifest(entries, tmp_path / "m.jsonl"))
    assert [e.clip_id for e in back] == ids


def test_outputs_never_follow_a_symlink_out_of_out(clip_root, setup, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    # A pre-placed link with a complete-looking record behind it is neither done nor written through.
    (elsewhere / "done.json").write_text(json.dumps({"clip_id": "a", "status": "done", "files": {}}))
    (out / "a").symlink_to(elsewhere, target_is_directory=True)
    summary = _run([clip_root["a"], clip_root["b"]], out, setup, report=False)
    assert summary.done_ids == ["b"] and summary.failed_ids == ["a"]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["done.json"]
    fail = dataset.failed_clips(out)["a"]
    assert "symbolic link" in fail["message"] and fail["class"] == "permanent"
    # The run's own files are not written through links either.
    out2 = tmp_path / "out2"
    out2.mkdir()
    (out2 / "failures.jsonl").symlink_to(elsewhere / "f.jsonl")
    with pytest.raises(dataset.OutputError, match="symbolic link"):
        _run([clip_root["a"]], out2, setup)


# --------------------------------------------------------------------------- 7. unreadable manifests
def test_unreadable_manifests_are_named(tmp_path, setup, monkeypatch, capsys):
    with pytest.raises(ValueError, match=f"{tmp_path}: is a folder"):
        manifest.read_manifest(tmp_path)
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(json.dumps({"clip_id": "ok", "kind": "video", "inputs": ["a.mp4"]}).encode() + b"\n"
                      + b'{"clip_id": "caf\xe9", "kind": "video", "inputs": ["b.mp4"]}\n')
    with pytest.raises(ValueError, match=rf"{latin}:2: not UTF-8 text \(byte 0xe9"):
        manifest.read_manifest(latin)
    for bad in (tmp_path, latin):
        code = _annotate_dataset([f"--manifest={bad}", f"--out={tmp_path / 'out'}"], setup, monkeypatch)
        err = capsys.readouterr().err
        assert code == 1 and str(bad) in err and "Traceback" not in err
