"""flame_jax.io memory bounds: tiny hostile files that ask for huge allocations are refused before
anything is allocated, with an error naming the file.

The hostile loads run in a child process under an address-space limit (``RLIMIT_AS``), each in its
own fork whose peak resident memory is measured (``os.wait4``): a regression fails (MemoryError or a
peak over the limit) instead of eating the machine.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flame_jax import io as fio
from flame_jax import testing as ft

# Address space of the child (the jax import alone reserves ~0.6 GB of it).
_AS_LIMIT = 1536 * 2**20
# Peak resident memory a refused load may add over the child's baseline.
_PEAK_SLACK = 150 * 2**20
_SMALL_BUDGET = 64 * 2**20

_HARNESS = textwrap.dedent(
    """
    import json, os, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import flame_jax.io as fio
    cases = json.loads(sys.argv[2])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {}
    for name, (kind, path, max_bytes, env) in cases.items():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.environ.update(env)
            try:
                load = fio.load_model if kind == "model" else fio.load_landmark_embedding
                load(path) if max_bytes is None else load(path, max_bytes=max_bytes)
                res = {"error": None, "message": ""}
            except BaseException as e:
                res = {"error": type(e).__name__, "message": str(e)[:400]}
            os.write(w, json.dumps(res).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        _, status, usage = os.wait4(pid, 0)
        res = json.loads(data) if data else {"error": f"child died (status {status})", "message": ""}
        res["peak"] = usage.ru_maxrss * 1024
        out[name] = res
    print(json.dumps({"base": base, "cases": out}))
    """
)


def _write_cases(d) -> dict:
    """name -> (kind, path, max_bytes, env): each file a few KB at most."""
    small = _SMALL_BUDGET
    env = {"FLAME_JAX_MAX_LOAD_BYTES": str(small)}
    return {
        # DECA-style .npy, three 16384² stride-0 float32 views of one element (3 GiB; the budget from the env).
        "zero_stride": ("emb", ft.write_zero_stride_npy(d / "zs.npy"), None,
                        env),
        # A list DAG of 2**34 numbers through the pickle memo (default budget).
        "list_dag": ("model", ft.write_list_dag_pickle(d / "dag.pkl"), None, {}),
        # 16384² sparse regressor from a few KB (coo) / from an index pointer (csc); 10**62 square.
        "sparse_16384": ("model", ft.write_sparse_regressor_pickle(d / "sp.pkl"), None, {}),
        "sparse_16384_csc": ("model", ft.write_sparse_regressor_pickle(d / "spc.pkl", fmt="csc"), None, {}),
        "sparse_1e62": ("model", ft.write_sparse_regressor_pickle(d / "sp62.pkl", shape=(10**62, 10**62)), None, {}),
        # A counted string declaring 1 TiB in 12 bytes.
        "counted_bytes": ("model", ft.write_counted_bytes_pickle(d / "cb.pkl"), None, {}),
        # A 256 MiB member deflated to ~250 KB, over a 64 MiB budget.
        "npz_inflate": ("emb", ft.write_npz_bomb(d / "bomb.npz", inflated=2**28), None, env),
        # A member whose zip header declares 64 bytes while its stream inflates to 256 MiB.
        "npz_lying_zip": ("emb", ft.write_npz_bomb(d / "lie.npz", inflated=2**28, lie=True), small, env),
        # A member whose .npy header declares 16 GiB over 64 KiB of data.
        "npz_npy_header": ("emb", ft.write_npz_bomb(d / "hdr.npz", inflated=2**16, declared_shape=(2**31,)), None, {}),
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    cases = _write_cases(d)
    arg = json.dumps({k: (kind, str(p), mb, env) for k, (kind, p, mb, env) in cases.items()})
    proc = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(_AS_LIMIT), arg], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: dict(v, path=str(cases[k][1]), size=os.path.getsize(cases[k][1])) for k, v in result["cases"].items()}, (
        result["base"]
    )


@pytest.mark.parametrize(
    "case",
    ["zero_stride", "list_dag", "sparse_16384", "sparse_16384_csc", "sparse_1e62", "npz_inflate"],
)
def test_hostile_file_refused_within_budget(hostile, case):
    results, base = hostile
    r = results[case]
    assert r["error"] == "FileTooLargeError", r
    assert r["path"] in r["message"] and "memory budget" in r["message"], r
    assert r["peak"] - base < _PEAK_SLACK, (case, r["peak"], base)
    assert r["size"] < 300_000


@pytest.mark.parametrize("case", ["counted_bytes", "npz_lying_zip", "npz_npy_header"])
def test_hostile_file_named_error_without_allocation(hostile, case):
    results, base = hostile
    r = results[case]
    assert r["error"] in ("FileTooLargeError", "_FileError"), r
    assert r["path"] in r["message"], r
    assert r["peak"] - base < _PEAK_SLACK, (case, r["peak"], base)


# ----------------------------------------------------------------------------- budget in process


def test_budget_keyword_and_environment(tmp_path, monkeypatch):
    ft.write_flame2020_pickle(tmp_path / "m.pkl", num_vertices=60, num_faces=100)
    assert fio.load_model(tmp_path / "m.pkl").num_vertices == 60
    with pytest.raises(fio.FileTooLargeError, match="memory budget") as e:
        fio.load_model(tmp_path / "m.pkl", max_bytes=50_000)
    assert str(tmp_path / "m.pkl") in str(e.value) and isinstance(e.value, ValueError)
    monkeypatch.setenv(fio.MAX_BYTES_ENV, "50000")
    with pytest.raises(fio.FileTooLargeError):
        fio.load_model(tmp_path / "m.pkl")
    assert fio.load_model(tmp_path / "m.pkl", max_bytes=10**9).num_vertices == 60  # the keyword wins
    monkeypatch.setenv(fio.MAX_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match=fio.MAX_BYTES_ENV):
        fio.load_model(tmp_path / "m.pkl")
    with pytest.raises(ValueError, match="max_bytes"):
        fio.load_model(tmp_path / "m.pkl", max_bytes=0)


def test_budget_covers_the_ringnet_pair(tmp_path):
    out = ft.write_ringnet_embedding(tmp_path)
    assert fio.load_landmark_embedding(out["static_path"]).kind == "ibug68"
    with pytest.raises(fio.FileTooLargeError):
        fio.load_landmark_embedding(out["static_path"], max_bytes=20_000)


def test_opcode_count_is_charged(tmp_path):
    # A million memo references to one float: ~2 MB of pickle, a million objects.
    x = [0.5]
    p = tmp_path / "many.pkl"
    p.write_bytes(pickle.dumps({"v_template": [x] * 1_000_000}, protocol=2))
    with pytest.raises(fio.FileTooLargeError, match="opcodes"):
        fio.load_model(p, max_bytes=32 * 2**20)


def test_npz_reader_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "a": rng.normal(size=(3, 4)),
        "f": np.asfortranarray(rng.normal(size=(5, 2)).astype(">f4")),
        "s": np.array("text"),
        "e": np.zeros((0, 3)),
        "i": np.arange(7, dtype=np.uint16),
    }
    np.savez_compressed(tmp_path / "x.npz", **arrays)
    got = fio.files._read_npz(tmp_path / "x.npz")
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    np.save(tmp_path / "f.npy", arrays["f"])
    np.testing.assert_array_equal(fio.files._read_npy(tmp_path / "f.npy"), arrays["f"])


def test_empty_array_in_an_embedding_pickle_is_not_unsafe(tmp_path):
    p = ft.write_empty_array_embedding(tmp_path / "emb.pkl")
    assert b"builtins\nbytes" in p.read_bytes() or b"__builtin__\nbytes" in p.read_bytes()
    emb = fio.load_landmark_embedding(p)
    assert emb.kind == "static" and np.asarray(emb.face_idx).shape == (51,)


def test_bytes_with_arguments_stays_refused(tmp_path):
    p = ft.write_pickle_calling(tmp_path / "b.pkl", "builtins", "bytes", 10**12)
    with pytest.raises(fio.UnsafeModelFileError, match="builtins.bytes"):
        fio.load_model(p)
