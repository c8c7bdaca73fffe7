"""flame_jax.io memory bounds, as properties over tiny hostile files (hypothesis).

Declared sizes are either small (really built) or astronomically large (a regression asks the OS for
at least 32 TiB, which fails at once without touching memory): these never eat the machine.
"""

from __future__ import annotations

import io
import struct
import zipfile

import hypothesis  # the test extra installs it: a missing hypothesis fails here rather than skipping
import numpy as np

from flame_jax import io as fio
from flame_jax import testing as ft

st = hypothesis.strategies

_dims = st.one_of(st.integers(0, 6), st.integers(2**45, 2**62))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(shape=st.lists(_dims, min_size=0, max_size=3), dtype=st.sampled_from(["<f8", "<i4", "|u1", ">f4"]),
                  extra=st.integers(0, 64))
def test_npy_header_property(tmp_path_factory, shape, dtype, extra):
    """Any declared .npy shape over a tiny body: the array comes back only when its data is there;
    otherwise a ValueError naming the file, never a MemoryError."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    p = tmp_path_factory.mktemp("npy") / "x.npy"
    p.write_bytes(head.getvalue() + bytes(extra))
    need = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    try:
        a = fio.files._read_npy(p)
    except ValueError as e:
        assert str(p) in str(e)
        # numpy itself cannot describe a size-0 array whose other extents overflow its index type
        unrepresentable = int(np.prod([n for n in shape if n], dtype=object)) * np.dtype(dtype).itemsize >= 2**63
        assert need > extra or unrepresentable
    else:
        assert a.shape == tuple(shape) and need <= extra


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(size=st.lists(_dims, min_size=1, max_size=3), stride=st.lists(st.integers(0, 3), min_size=3, max_size=3),
                  offset=st.integers(0, 3))
def test_torch_view_property(tmp_path_factory, size, stride, offset):
    """Any torch view of a 16-element storage: built only within the storage and the budget."""
    storage = np.arange(16, dtype=np.float32)
    t = ft.torch_tensor(storage, size=size, stride=stride[: len(size)], offset=offset)
    p = tmp_path_factory.mktemp("torch") / "t.npy"
    ft.write_npy_object(p, {"static_lmk_faces_idx": t})
    d = None
    try:
        d = fio.files._unwrap_container(fio.files._read_npy(p, fio.errors._Source(p, 2**20)), str(p))
    except ValueError as e:
        assert str(p) in str(e)
    if d is not None:
        a = d["static_lmk_faces_idx"]
        assert a.shape == tuple(size) and a.nbytes <= 2**20


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(declared=st.integers(0, 2**40), payload=st.integers(0, 300))
def test_npz_declared_size_property(tmp_path_factory, declared, payload):
    """Whatever size a zip entry declares, no more than the budget is inflated or allocated."""
    p = tmp_path_factory.mktemp("npz") / "x.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as m:
            np.lib.format.write_array(m, np.zeros(payload // 8))
    raw = bytearray(p.read_bytes())
    # Patch the central directory's uncompressed size (offset 24 in the record).
    cd = raw.rfind(b"PK\x01\x02")
    if declared < 2**32 - 1:
        struct.pack_into("<L", raw, cd + 24, declared)
        p.write_bytes(bytes(raw))
    try:
        got = fio.files._read_npz(p, fio.errors._Source(p, 2**20))
    except ValueError as e:
        assert str(p) in str(e)
    else:
        assert got["x"].nbytes <= 2**20
