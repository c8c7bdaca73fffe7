"""The learned model as an ordinary FLAME-format ``.npz``, with its provenance inside.

The file is exactly what ``flame_jax.save_model`` writes (``format``, ``name`` and the FLAME arrays,
the learned identity components appended after the base model's in ``shapedirs``), plus
``learning``, a JSON string: the base model (name, file, SHA-256, identity component count), the
learning run (corpus, settings, losses, timings) and the component layout; and
``shape_prior_weights``, the per-coefficient identity prior for fitting (the base's coefficients at
the base's weight, the learned ones at ``test_prior`` times it), which ``flame_jax.load_shape_prior``
reads and ``annotate`` applies.

``flame_jax.load_model`` ignores the extra members, so every command that takes a model file takes
this one. Everything is read with pickles disabled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

import flame_jax
from flame_jax.atomic import atomic_write
from flame_jax.io.flame_model import MODEL_FORMAT, SHAPE_PRIOR_KEY
from neuface_jax import photometric
from neuface_jax.model_learning import fit as mfit

#: Member holding the learning record (a JSON string).
LEARNING_KEY = "learning"
#: Texture members: the learned per-vertex albedo mean [V, 3] and components [K, V, 3].
ALBEDO_MEAN_KEY = "albedo_mean"
ALBEDO_BASIS_KEY = "albedo_basis"
#: Version of the learning record.
LEARNING_FORMAT = "neuface_jax-model-learning-v1"


def append_identity_components(base: flame_jax.FlameModel, components, name: str, *,
                               template_offset=None) -> flame_jax.FlameModel:
    """``base`` with identity components (K, V, 3) (or (K, V*3)) after its own, as a new model
    (``template_offset`` (V, 3), when given, is added to the template)."""
    comps = np.asarray(components, np.float32).reshape(-1, base.num_vertices, 3)
    arrays = base.to_numpy()
    if template_offset is not None:
        arrays["v_template"] = arrays["v_template"] + np.asarray(template_offset, np.float32).reshape(-1, 3)
    shapedirs = np.concatenate([arrays["shapedirs"], np.moveaxis(comps, 0, -1)], axis=-1)
    return flame_jax.FlameModel.from_arrays(
        v_template=arrays["v_template"], shapedirs=shapedirs, exprdirs=arrays["exprdirs"],
        posedirs=arrays["posedirs"], lbs_weights=arrays["weights"], joint_regressor=arrays["J_regressor"],
        faces=arrays["f"], parents=arrays["parents"], name=name, source=name,
    )


def save_learned_model(model: flame_jax.FlameModel, path, learning: dict[str, Any], albedo=None) -> Path:
    """Writes ``model`` in the ``flame_jax`` model format with the learning record (atomically), the
    test-time identity prior the record asks for (``shape_prior_of``) in ``flame_jax``'s
    ``shape_prior_weights`` member, read by ``flame_jax.load_shape_prior`` (so ``annotate`` fits with
    it), and the learned per-vertex albedo model (``photometric.AlbedoModel``) in the texture members
    ``albedo_mean`` [V, 3] and ``albedo_basis`` [K, V, 3] when given."""
    arrays = dict(model.to_numpy())
    if albedo is not None:
        mean, basis = np.asarray(albedo.mean, np.float32), np.asarray(albedo.basis, np.float32)
        if mean.shape != (model.num_vertices, 3) or basis.shape[1:] != mean.shape:
            raise ValueError(f"albedo model of shapes {mean.shape}, {basis.shape} for a model of "
                             f"{model.num_vertices} vertices")
        arrays[ALBEDO_MEAN_KEY], arrays[ALBEDO_BASIS_KEY] = mean, basis
    arrays["name"] = np.array(str(model.name))
    arrays["format"] = np.array(MODEL_FORMAT)
    record = dict(learning, format=LEARNING_FORMAT)
    arrays[LEARNING_KEY] = np.array(json.dumps(record, sort_keys=True))
    arrays[SHAPE_PRIOR_KEY] = shape_prior_of(record, model.num_shape)
    path = Path(path)
    atomic_write(os.fspath(path), lambda f: np.savez(f, **arrays))
    return path


def read_learning_record(path) -> dict[str, Any] | None:
    """The learning record of a model file (None for a model that was not learned here).

    Raises:
      ValueError: naming the file when the record is not a JSON object of the expected format.
    """
    with np.load(path, allow_pickle=False) as z:
        if LEARNING_KEY not in z.files:
            return None
        raw = z[LEARNING_KEY]
    if raw.shape != () or raw.dtype.kind not in "US":
        raise ValueError(f"{path}: '{LEARNING_KEY}' is not a string")
    try:
        record = json.loads(str(raw[()]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: '{LEARNING_KEY}' is not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != LEARNING_FORMAT:
        raise ValueError(f"{path}: '{LEARNING_KEY}' is not a {LEARNING_FORMAT} record")
    return record


def shape_prior_of(record: dict[str, Any] | None, num_shape: int) -> np.ndarray:
    """[num_shape] the identity-prior weights a learned model's record asks for at test time (its
    learned components' ``test_prior`` scale; ``fit.shape_prior_weights``), the plain mean of squares
    for a model without a record."""
    if record is None:
        return mfit.shape_prior_weights(num_shape)
    try:
        first = int(record["learned"]["first_component"])
        scale = float(record.get("config", {}).get("test_prior", 1.0))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"learning record without learned.first_component ({err})") from err
    return mfit.shape_prior_weights(num_shape, first, scale)


def read_albedo_model(path) -> photometric.AlbedoModel | None:
    """The per-vertex albedo model stored in a model file (None when it has none).

    Raises:
      ValueError: naming the file when the members are malformed.
    """
    with np.load(path, allow_pickle=False) as z:
        if ALBEDO_MEAN_KEY not in z.files:
            return None
        if ALBEDO_BASIS_KEY not in z.files:
            raise ValueError(f"{path}: '{ALBEDO_MEAN_KEY}' without '{ALBEDO_BASIS_KEY}'")
        mean, basis = z[ALBEDO_MEAN_KEY], z[ALBEDO_BASIS_KEY]
    if mean.ndim != 2 or mean.shape[1] != 3 or basis.ndim != 3 or basis.shape[1:] != mean.shape:
        raise ValueError(f"{path}: albedo members of shapes {mean.shape} and {basis.shape}, "
                         "expected [V, 3] and [K, V, 3]")
    return photometric.AlbedoModel(mean.astype(np.float32), basis.astype(np.float32))


__all__ = [
    "ALBEDO_BASIS_KEY",
    "ALBEDO_MEAN_KEY",
    "LEARNING_FORMAT",
    "LEARNING_KEY",
    "append_identity_components",
    "read_albedo_model",
    "read_learning_record",
    "shape_prior_of",
    "save_learned_model",
]
