"""FLAME model files: the official pickles (2020, 2023, 2023 Open) and this project's ``.npz``."""

from __future__ import annotations

from typing import Any

import numpy as np

from flame_jax.io.convert import _dense, _numeric
from flame_jax.io.errors import _Source, _fail, _named_errors
from flame_jax.io.files import _atomic_savez, _check_format, _check_path, _read_npz, _sniff, _text, _unpickle_file
from flame_jax.io.unpickler import _as_int
from flame_jax.model import FLAME_NUM_SHAPE_FILE, FlameModel


#: Format marker stored in (and required of) this project's model ``.npz`` files.
MODEL_FORMAT = "flame_jax-model-v1"

_MODEL_KEYS = ("v_template", "shapedirs", "exprdirs", "posedirs", "weights", "J_regressor", "f", "parents")
_FLAME_PKL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")

# =============================================================================
# Models
# =============================================================================


def _component_count(n, available: int, what: str, source: str) -> int:
    if n is None:
        return available
    try:
        n = _as_int(n, what)
    except TypeError:
        raise ValueError(f"{source}: {what} must be an integer, got {n!r}") from None
    if n < 0:
        raise ValueError(f"{source}: {what}={n} must not be negative")
    if n > available:
        raise ValueError(f"{source}: {what}={n} but the file holds only {available} components")
    return n


def _model_from_pickle_dict(d, source: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _fail(source, f"expected a pickled dict of FLAME arrays, got {type(d).__name__}")
    missing = [k for k in _FLAME_PKL_KEYS if k not in d]
    if missing:
        raise _fail(source, f"missing FLAME key(s) {missing}; is this a FLAME model file?")
    shapedirs = _dense(d["shapedirs"], source, "shapedirs")
    if shapedirs.ndim != 3:
        raise _fail(source, f"'shapedirs' must have shape (V, 3, K), got {shapedirs.shape}")
    split = min(FLAME_NUM_SHAPE_FILE, shapedirs.shape[2])
    kintree = _dense(d["kintree_table"], source, "kintree_table")
    if kintree.ndim != 2 or kintree.shape[0] != 2 or not np.issubdtype(kintree.dtype, np.integer):
        raise _fail(source, f"'kintree_table' must be an integer (2, J) array, got {kintree.dtype} {kintree.shape}")
    jreg = _numeric(d["J_regressor"], source, "J_regressor")
    return {
        "v_template": _dense(d["v_template"], source, "v_template"),
        "shapedirs": shapedirs[..., :split],
        "exprdirs": shapedirs[..., split:],
        "posedirs": _dense(d["posedirs"], source, "posedirs"),
        "weights": _dense(d["weights"], source, "weights"),
        "J_regressor": jreg.toarray() if hasattr(jreg, "toarray") else np.asarray(jreg),
        "f": _dense(d["f"], source, "f"),
        "parents": kintree[0],
    }


def _model_from_npz(z: dict, source: str) -> tuple[dict[str, Any], str | None]:
    if "format" not in z:
        if all(k in z for k in _FLAME_PKL_KEYS):  # a FLAME pickle converted key for key
            return _model_from_pickle_dict(z, source), None
        raise _fail(source, f"not a flame_jax model archive (no 'format' marker; keys {sorted(z)})")
    _check_format(z, MODEL_FORMAT, source)
    missing = [k for k in _MODEL_KEYS if k not in z]
    if missing:
        raise _fail(source, f"missing key(s) {missing}")
    name = None
    if "name" in z:
        try:
            name = _text(z["name"])
        except ValueError:
            raise _fail(source, "'name' is not a string") from None
    return {k: z[k] for k in _MODEL_KEYS}, name


def load_model(
    path, *, n_shape: int | None = None, n_expr: int | None = None, max_bytes: int | None = None
) -> FlameModel:
    """Loads a FLAME model.

    Args:
      path: an official FLAME ``.pkl`` (2020 ``generic_model.pkl``, 2023
        ``flame2023.pkl``, 2023 Open ``flame2023_Open.pkl``) or a ``.npz`` written by
        :func:`save_model`. The format is recognized from the content.
      n_shape: keep only the leading identity components (default: all, 300 in
        official files).
      n_expr: keep only the leading expression components (default: all, 100).
      max_bytes: memory budget of the load: the arrays (declared sizes, decompressed sizes, dense
        sizes of sparse matrices, expanded nested lists) and pickle objects the file may make the
        loader build, checked before each allocation. Default: ``$FLAME_JAX_MAX_LOAD_BYTES``, else
        ``flame_jax.io.DEFAULT_MAX_BYTES`` (2 GiB; official files need a few hundred MB).

    Returns:
      A :class:`FlameModel` (float32/int32).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      UnsafeModelFileError: the pickle references a non-allow-listed global (nothing runs).
      FileTooLargeError: (a ValueError) naming the file, when it asks for more than ``max_bytes``.
      ValueError: naming the file, for any malformed content.
    """
    p = _check_path(path)
    source = _Source(p, max_bytes)
    kind = _sniff(p)
    name = None
    if kind == "npz":
        arrays, name = _model_from_npz(_read_npz(p, source), source)
    elif kind == "npy":
        raise _fail(source, "a .npy file is not a FLAME model (expected a .pkl or a flame_jax .npz)")
    else:
        arrays = _model_from_pickle_dict(_unpickle_file(p, source), source)
    shapedirs, exprdirs = np.asarray(arrays["shapedirs"]), np.asarray(arrays["exprdirs"])
    if shapedirs.ndim != 3 or exprdirs.ndim != 3:
        raise _fail(source, f"blend shapes must be (V, 3, K), got {shapedirs.shape} and {exprdirs.shape}")
    ns = _component_count(n_shape, shapedirs.shape[2], "n_shape", source)
    ne = _component_count(n_expr, exprdirs.shape[2], "n_expr", source)
    with _named_errors(source, "model arrays"):
        return FlameModel.from_arrays(
            v_template=arrays["v_template"],
            shapedirs=shapedirs[..., :ns],
            exprdirs=exprdirs[..., :ne],
            posedirs=arrays["posedirs"],
            lbs_weights=arrays["weights"],
            joint_regressor=arrays["J_regressor"],
            faces=arrays["f"],
            parents=arrays["parents"],
            name=name if name is not None else f"FLAME ({p.name})",
            source=source,
        )


#: Optional member of a model ``.npz``: [S] per-identity-coefficient prior weights ``w`` of the
#: identity prior ``Σ w_i β_i²`` the model asks fitting to use (without it: ``1 / S`` each, the mean
#: of squares). A model whose extra components need a prior unlike the others' records it here.
SHAPE_PRIOR_KEY = "shape_prior_weights"


def load_shape_prior(path, *, n_shape: int | None = None, max_bytes: int | None = None) -> np.ndarray | None:
    """The identity-prior weights (``SHAPE_PRIOR_KEY``, float32 [S]) a model ``.npz`` records, the
    leading ``n_shape`` of them when given; None for a file that records none (FLAME pickles never do).

    Raises:
      ValueError: naming the file, when the member is not a finite, non-negative vector with one
        weight per identity component, or ``n_shape`` exceeds it.
    """
    p = _check_path(path)
    source = _Source(p, max_bytes)
    if _sniff(p) != "npz":
        return None
    arrays = _read_npz(p, source)
    if SHAPE_PRIOR_KEY not in arrays:
        return None
    w = np.asarray(arrays[SHAPE_PRIOR_KEY])
    num_shape = np.asarray(arrays["shapedirs"]).shape[-1] if "shapedirs" in arrays else None
    if w.ndim != 1 or w.dtype.kind not in "fiu" or (num_shape is not None and len(w) != num_shape):
        raise _fail(source, f"'{SHAPE_PRIOR_KEY}' must be a vector of {num_shape} weights (one per identity "
                            f"component), got {w.dtype} {w.shape}")
    w = w.astype(np.float32)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise _fail(source, f"'{SHAPE_PRIOR_KEY}' must be finite and non-negative")
    n = _component_count(n_shape, len(w), "n_shape", source)
    return w[:n]


def save_model(model: FlameModel, path) -> None:
    """Writes ``model`` as this project's ``.npz`` (exactly the given path; round trip is bit-exact)."""
    arrays = dict(model.to_numpy())
    arrays["name"] = np.array(str(model.name))
    arrays["format"] = np.array(MODEL_FORMAT)
    _atomic_savez(path, arrays)


