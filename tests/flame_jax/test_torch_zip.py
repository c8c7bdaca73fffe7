"""PyTorch checkpoints read without torch (flame_jax.io.torch_zip): formats, dtypes, views, refusals, memory.

The torch-written files under tests/fixtures/torch_encoder/ come from
experiments/make_torch_encoder_fixtures.py (torch 2.13.0); the malicious and malformed files are built
here byte by byte.
"""

from __future__ import annotations

import os
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from flame_jax.io import FileTooLargeError, UnsafeModelFileError
from flame_jax.io.torch_zip import Placeholder, load_torch_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "torch_encoder")


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


# ----------------------------------------------------------------------------- hand-built files


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def tensor_ops(numel, offset, size, stride, *, storage="FloatStorage", tag="storage", key="0") -> bytes:
    """Pickle opcodes of one tensor, as torch writes it: _rebuild_tensor_v2(storage pid, offset, size, ...)."""
    pid = _tuple([_str(tag), f"ctorch\n{storage}\n".encode(), _str(key), _str("cpu"), _int(numel)]) + b"Q"
    hooks = b"ccollections\nOrderedDict\n)R"
    args = _tuple([pid, _int(offset), _tuple(map(_int, size)), _tuple(map(_int, stride)), b"\x89", hooks])
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def tensor_pickle(*args, **kwargs) -> bytes:
    """A protocol-2 pickle of one tensor."""
    return b"\x80\x02" + tensor_ops(*args, **kwargs) + b"."


def write_zip(path, pkl: bytes, storages: dict[str, bytes], *, compress=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            zf.writestr(zipfile.ZipInfo(f"archive/data/{key}"), data, compress_type=compress)
    return str(path)


# ----------------------------------------------------------------------------- torch-written files


@pytest.mark.parametrize("name", ["tensors_zip.pt", "tensors_legacy.pt"])
def test_every_dtype_and_view_matches_torch(name):
    expected = np.load(fixture("expected.npz"))
    got = load_torch_checkpoint(fixture(name))
    keys = sorted(k[2:] for k in expected.files if k.startswith("t/"))
    assert sorted(got) == keys
    for k in keys:
        want = expected[f"t/{k}"]
        assert got[k].dtype == want.dtype and got[k].shape == want.shape, k
        np.testing.assert_array_equal(got[k], want, err_msg=k)
    assert got["transposed"].flags.c_contiguous and got["transposed"].flags.writeable


@pytest.mark.parametrize("name", ["deca_model.tar", "deca_legacy.tar"])
def test_deca_layout_checkpoint_reads_in_both_formats(name):
    obj = load_torch_checkpoint(fixture(name))
    assert set(obj) >= {"E_flame", "E_detail", "opt"}
    assert obj["E_flame"]["encoder.conv1.weight"].shape == (2, 3, 7, 7)
    assert obj["E_flame"]["layers.2.weight"].shape == (236, 16)
    assert obj["E_flame"]["encoder.bn1.num_batches_tracked"] == 7


def test_lightning_extras_refused_by_name_unless_asked_for():
    with pytest.raises(UnsafeModelFileError, match=r"pytorch_lightning\.callbacks.*extras=True"):
        load_torch_checkpoint(fixture("emoca.ckpt"))
    obj = load_torch_checkpoint(fixture("emoca.ckpt"), extras=True)
    assert isinstance(obj["hyper_parameters"], Placeholder)
    (callback,) = obj["callbacks"]
    assert issubclass(callback, Placeholder)
    assert obj["state_dict"]["deca.E_expression.layers.2.weight"].shape == (50, 16)


# ----------------------------------------------------------------------------- refusals


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


@pytest.mark.parametrize("extras", [False, True])
def test_os_system_pickle_in_a_zip_is_refused_and_not_run(tmp_path, extras):
    marker = tmp_path / "ran"
    pkl = pickle.dumps({"w": _System(f"touch {marker}")}, protocol=2)
    path = write_zip(tmp_path / "evil.pt", pkl, {})
    with pytest.raises(UnsafeModelFileError, match="system"):
        load_torch_checkpoint(path, extras=extras)
    assert not marker.exists()


def test_valid_hand_built_tensor(tmp_path):
    data = np.arange(12, dtype="<f4")
    path = write_zip(tmp_path / "ok.pt", tensor_pickle(12, 2, (2, 3), (1, 2)), {"0": data.tobytes()})
    np.testing.assert_array_equal(load_torch_checkpoint(path), np.array([[2, 4, 6], [3, 5, 7]], np.float32))


@pytest.mark.parametrize(
    "numel, offset, size, stride, match",
    [
        (12, 0, (3, 4), (4, 100), "reaches element"),  # out-of-range stride
        (12, 11, (2,), (1,), "reaches element"),  # offset + size past the storage
        (12, 0, (3,), (-1,), "negative"),
        (12, 0, (3, 4), (4,), "differ in length"),
    ],
)
def test_views_outside_the_storage_are_refused(tmp_path, numel, offset, size, stride, match):
    path = write_zip(tmp_path / "bad.pt", tensor_pickle(numel, offset, size, stride), {"0": bytes(4 * numel)})
    with pytest.raises(ValueError, match=match):
        load_torch_checkpoint(path)


def test_truncated_storage_is_refused(tmp_path):
    path = write_zip(tmp_path / "short.pt", tensor_pickle(10, 0, (10,), (1,)), {"0": bytes(12)})
    with pytest.raises(ValueError, match="holds 12 bytes"):
        load_torch_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    raw = open(fixture("deca_model.tar"), "rb").read()
    path = tmp_path / "cut.tar"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.tar"):
        load_torch_checkpoint(path)
    legacy = open(fixture("deca_legacy.tar"), "rb").read()
    path.write_bytes(legacy[: len(legacy) - 100])
    with pytest.raises(ValueError, match="truncated"):
        load_torch_checkpoint(path)


def test_corrupted_storage_fails_its_crc(tmp_path):
    path = write_zip(tmp_path / "crc.pt", tensor_pickle(4, 0, (4,), (1,)), {"0": np.arange(4, dtype="<f4").tobytes()})
    raw = bytearray(open(path, "rb").read())
    at = raw.find(np.arange(4, dtype="<f4").tobytes())
    raw[at + 5] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match="CRC"):
        load_torch_checkpoint(path)


def test_compressed_storage_and_foreign_persistent_ids_are_refused(tmp_path):
    data = {"0": bytes(16)}
    path = write_zip(tmp_path / "z.pt", tensor_pickle(4, 0, (4,), (1,)), data, compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="compressed"):
        load_torch_checkpoint(path)
    path = write_zip(tmp_path / "pid.pt", tensor_pickle(4, 0, (4,), (1,), tag="module"), data)
    with pytest.raises(UnsafeModelFileError, match="not a torch storage"):
        load_torch_checkpoint(path)
    path = write_zip(tmp_path / "cls.pt", tensor_pickle(4, 0, (4,), (1,), storage="Evil"), data)
    with pytest.raises(UnsafeModelFileError, match="torch.Evil"):
        load_torch_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_torch_checkpoint(path)


# ----------------------------------------------------------------------------- memory


def test_budget_and_peak_memory_about_twice_the_file(tmp_path):
    n = 2**21  # 8 MiB of float32
    path = write_zip(tmp_path / "big.pt", tensor_pickle(n, 0, (n // 4, 4), (4, 1)), {"0": bytes(4 * n)})
    size = os.path.getsize(path)
    with pytest.raises(FileTooLargeError, match="big.pt"):
        load_torch_checkpoint(path, max_bytes=size)
    tracemalloc.start()
    arr = load_torch_checkpoint(path, max_bytes=int(2.1 * size))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert arr.shape == (n // 4, 4)
    assert peak <= 2.1 * size


def test_select_reads_only_the_storages_it_keeps(tmp_path):
    n = 2**20
    pkl = b"\x80\x02}(" + _str("keep") + tensor_ops(4, 0, (4,), (1,), key="0")
    pkl += _str("skip") + tensor_ops(n, 0, (n,), (1,), key="1") + b"u."
    path = write_zip(tmp_path / "two.pt", pkl, {"0": np.arange(4, dtype="<f4").tobytes(), "1": bytes(4 * n)})
    tracemalloc.start()
    got = load_torch_checkpoint(path, select=lambda obj: {"keep": obj["keep"]})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got["keep"], np.arange(4, dtype=np.float32))
    assert peak < n  # the 4 MiB storage of "skip" was never read
    assert load_torch_checkpoint(path)["skip"].shape == (n,)
