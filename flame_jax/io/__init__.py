"""Reading and writing FLAME model files and landmark embeddings.

Model files (``load_model``):

* official FLAME 2020 ``generic_model.pkl`` (and the male/female variants),
  FLAME 2023 ``flame2023.pkl`` / ``flame2023_no_jaw.pkl`` and FLAME 2023 Open
  ``flame2023_Open.pkl``: Python pickles of a dict whose arrays may be chumpy
  objects and whose joint regressor is a SciPy sparse matrix;
* this project's own ``.npz`` (written by ``save_model``).

Landmark embeddings (``load_landmark_embedding``):

* DECA ``landmark_embedding.npy`` (its dynamic contour table is pickled *torch*
  tensors; they are decoded here without torch);
* RingNet/smplx ``flame_static_embedding.pkl`` (+ ``flame_dynamic_embedding.npy``
  beside it);
* MediaPipe ``mediapipe_landmark_embedding.npz``;
* this project's own ``.npz`` (written by ``save_landmark_embedding``).

Safety: a pickle can run arbitrary code while it is read. Every pickle (``.pkl``
files and the pickled payload of object ``.npy`` files) is read by a restricted
unpickler whose ``find_class`` resolves only an allow-list of names -- numpy's array
reconstruction, SciPy sparse matrices, chumpy classes (mapped to inert stubs that
keep their stored array) and the handful of torch names a pickled CPU tensor uses
(mapped to a decoder written here). Any other global -- ``os.system``,
``builtins.eval``, ... -- raises :class:`UnsafeModelFileError` before anything named
in the file is called. ``.npz`` files are always read with ``allow_pickle=False``.

Memory: every load has a budget (``max_bytes=``, else ``$FLAME_JAX_MAX_LOAD_BYTES``, else
``DEFAULT_MAX_BYTES`` = 2 GiB) for what a file may make the loader build -- declared ``.npy``
sizes, decompressed ``.npz`` member sizes (never inflating past them), pickled arrays and torch
tensors (stride-0 views at their full size), the dense size of sparse matrices, nested lists
expanded (shared sub-lists included) and one charge per pickle opcode. Each is checked before
the allocation; going over raises :class:`FileTooLargeError` (a ``ValueError``) naming the file.

Modules: ``errors`` (the exceptions and limits), ``unpickler`` (the restricted unpickler and
the inert stand-ins), ``torch_stream`` (pickled torch tensors without torch), ``torch_zip``
(whole PyTorch checkpoints, zip and legacy formats: ``load_torch_checkpoint``), ``files`` (safe
reading, atomic writing), ``convert`` (stand-ins → arrays), ``flame_model`` (model files),
``embeddings`` (landmark embeddings).
"""

from flame_jax.io.embeddings import EMBEDDING_FORMAT, load_landmark_embedding, save_landmark_embedding
from flame_jax.io.errors import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, FileTooLargeError, UnsafeModelFileError
from flame_jax.io.files import _read_npy  # noqa: F401  (used by tests)
from flame_jax.io.flame_model import MODEL_FORMAT, SHAPE_PRIOR_KEY, load_model, load_shape_prior, save_model

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "FileTooLargeError",
    "EMBEDDING_FORMAT",
    "MODEL_FORMAT",
    "SHAPE_PRIOR_KEY",
    "UnsafeModelFileError",
    "load_landmark_embedding",
    "load_model",
    "load_shape_prior",
    "save_landmark_embedding",
    "save_model",
]
