"""``annotate`` and ``annotate-dataset`` check every input before building anything expensive.

Timing-free: the expensive builders (the setup: face model, encoder; the demo head) are replaced by
functions that fail the test when reached, and each bad input must give its clear error and exit
status first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import flame_jax
from neuface_jax import annotation as annotation_pkg
from neuface_jax import cli
from neuface_jax.annotation import preflight
from neuface_jax.annotation import run as run_lib
from neuface_jax.annotation import setup as setup_lib
from neuface_jax.annotation.config import SetupConfig
from neuface_jax.media import video


def _reached(*_a, **_k):
    raise AssertionError("an expensive builder ran before the inputs were checked")


@pytest.fixture
def no_build(monkeypatch):
    """Every route to the model / encoder build fails the test."""
    monkeypatch.setattr(run_lib, "make_setup", _reached)
    monkeypatch.setattr(annotation_pkg, "make_setup", _reached)
    monkeypatch.setattr(setup_lib, "resolve_face_model", _reached)
    monkeypatch.setattr(setup_lib.encoder_lib, "load_encoder", _reached)
    monkeypatch.setattr(flame_jax, "demo_model", _reached)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "tiny.mp4"
    with video.VideoWriter(path, fps=25) as w:
        for k in range(3):
            w.append(np.full((32, 32, 3), 40 * k, np.uint8))
    return path


@pytest.fixture
def landmarker(tmp_path):
    p = tmp_path / "face_landmarker.task"
    p.write_bytes(b"not opened by the checks")
    return p


def _annotate(*args):
    return cli.main(["neuface-jax", "annotate", *args])


def _expect(capsys, rc, want, *args):
    assert _annotate(*args) == rc
    err = capsys.readouterr().err
    assert err.startswith("neuface-jax annotate: error:") and want in err, err


def test_missing_video(no_build, tmp_path, landmarker, capsys):
    _expect(capsys, 1, "nope.mp4", f"--video={tmp_path / 'nope.mp4'}", f"--out={tmp_path / 'o'}",
            f"--face_landmarker={landmarker}")
    with pytest.raises(video.VideoError, match="nope.mp4"):
        annotation_pkg.annotate(tmp_path / "nope.mp4", out_dir=tmp_path / "o",
                                setup=SetupConfig(face_landmarker=str(landmarker)))
    assert not (tmp_path / "o").exists()


def test_missing_landmarker(no_build, tmp_path, clip, capsys):
    _expect(capsys, 1, "missing.task", f"--video={clip}", f"--out={tmp_path / 'o'}",
            f"--face_landmarker={tmp_path / 'missing.task'}")


def test_missing_or_bad_model_files(no_build, tmp_path, clip, landmarker, capsys):
    base = [f"--video={clip}", f"--out={tmp_path / 'o'}", f"--face_landmarker={landmarker}"]
    emb = tmp_path / "landmark_embedding.npy"
    emb.write_bytes(b"garbage, not an embedding")
    _expect(capsys, 1, "none.pkl", *base, f"--flame_model={tmp_path / 'none.pkl'}", f"--landmark_embedding={emb}")
    flame = tmp_path / "flame.pkl"
    flame.write_bytes(b"\x80\x02 some bytes")
    _expect(capsys, 1, "--landmark_embedding", *base, f"--flame_model={flame}")
    _expect(capsys, 1, f"--landmark_embedding {emb}", *base, f"--flame_model={flame}", f"--landmark_embedding={emb}")
    _expect(capsys, 1, "--encoder", *base, f"--encoder={tmp_path / 'no_ckpt'}")
    (tmp_path / "empty_ckpt").mkdir()
    _expect(capsys, 1, "not an encoder checkpoint", *base, f"--encoder={tmp_path / 'empty_ckpt'}")


def test_output_folder_not_creatable(no_build, tmp_path, clip, landmarker, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    _expect(capsys, 1, "cannot be created", f"--video={clip}", f"--out={blocker / 'sub'}",
            f"--face_landmarker={landmarker}")
    _expect(capsys, 1, "is a file", f"--video={clip}", f"--out={blocker}", f"--face_landmarker={landmarker}")


def test_check_output_dir_does_not_create(tmp_path):
    out = tmp_path / "x" / "y"
    assert preflight.check_output_dir(out) == out
    assert not (tmp_path / "x").exists()


def test_annotate_dataset_checks_models_first(no_build, tmp_path, clip, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"clip_id": "a", "kind": "video", "inputs": [str(clip)]}) + "\n")
    rc = cli.main(["neuface-jax", "annotate-dataset", f"--manifest={manifest}", f"--out={tmp_path / 'ds'}",
                   f"--flame_model={tmp_path / 'none.pkl'}", "--landmark_embedding=x.npy",
                   f"--face_landmarker={tmp_path / 'missing.task'}"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("neuface-jax annotate-dataset: error:") and "none.pkl" in err, err
    assert "neuface-jax annotate:" not in err
    assert not (tmp_path / "ds").exists()  # nothing created before the checks pass
