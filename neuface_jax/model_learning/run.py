"""``neuface-jax learn-model`` as a function: manifest + base model → a learned model file."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import flame_jax
from neuface_jax.annotation.config import PrepareConfig
from neuface_jax.common import log as log_lib
from neuface_jax.dataset.manifest import read_manifest
from neuface_jax.media.landmarker import sha256_file
from neuface_jax.model_learning import model_file
from neuface_jax.model_learning.corpus import CorpusConfig, load_corpus
from neuface_jax.model_learning.fit import ClipFitConfig
from neuface_jax.model_learning.learn import LearnConfig, learn_model

logger = logging.getLogger(__name__)


def embedding_path_for(model_path) -> Path:
    """Where ``learn_from_manifest`` writes the landmark embedding beside a model file."""
    p = Path(model_path)
    return p.with_name(p.stem + ".landmark_embedding.npz")


def learn_from_manifest(
    manifest,
    out,
    *,
    base_model: str | None = None,
    landmark_embedding: str | None = None,
    config: LearnConfig = LearnConfig(),
    corpus_config: CorpusConfig = CorpusConfig(),
    fit_config: ClipFitConfig = ClipFitConfig(),
    prepare_config: PrepareConfig = PrepareConfig(),
    face_landmarker: str | None = None,
    command: str | None = None,
    progress: log_lib.ProgressFactory | None = None,
) -> dict[str, Any]:
    """Learns a model over the clips of ``manifest`` and writes it to ``out`` (a ``.npz``).

    The base model is ``base_model`` (a FLAME file or a ``flame_jax`` ``.npz``; default the demo
    head) with its ``landmark_embedding``. Beside the model, ``<stem>.landmark_embedding.npz`` holds
    the base's embedding (the topology is unchanged, so it is the learned model's too), for
    ``annotate --flame_model out --landmark_embedding <stem>.landmark_embedding.npz``.

    Returns the learning record written into the model file.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name a .npz file, got {out}")
    entries = read_manifest(manifest)
    if not entries:
        raise ValueError(f"{manifest}: the manifest lists no clips")
    if base_model is None:
        if landmark_embedding is not None:
            raise ValueError("--landmark_embedding belongs to a --base_model")
        base = flame_jax.demo_model()
        embedding = flame_jax.demo_landmark_embedding() if corpus_config.landmark_set == "ibug68" \
            else flame_jax.demo_mediapipe_embedding()
        base_info = {"file": None, "sha256": None}
    else:
        if landmark_embedding is None:
            raise ValueError("a --base_model needs its --landmark_embedding (68-point, or MediaPipe for mediapipe105)")
        base = flame_jax.load_model(base_model)
        embedding = flame_jax.load_landmark_embedding(landmark_embedding, model=base)
        base_info = {"file": str(Path(base_model).resolve()), "sha256": sha256_file(base_model),
                     "landmark_embedding": str(Path(landmark_embedding).resolve())}
    if (int(config.albedo_components) > 0 or float(config.photometric) > 0) and int(corpus_config.image_size) == 0:
        # the albedo step and the photometric term need face crops
        corpus_config = dataclasses.replace(corpus_config, image_size=64)
    corpus = load_corpus(entries, base, embedding, corpus_config, prepare_config=prepare_config,
                         face_landmarker=face_landmarker, progress=progress)
    result = learn_model(base, corpus, config, fit_config, progress=progress)
    record = dict(result.record)
    record["base"] = dict(record["base"], **base_info)
    record["corpus"] = dict(record["corpus"], manifest=str(Path(manifest).resolve()),
                            manifest_sha256=sha256_file(manifest),
                            corpus_config=dataclasses.asdict(corpus_config))
    if command:
        record["command"] = command
    out.parent.mkdir(parents=True, exist_ok=True)
    model_file.save_learned_model(result.model, out, record, albedo=result.albedo)
    flame_jax.save_landmark_embedding(embedding, embedding_path_for(out))
    logger.info("wrote %s (%d + %d identity components) and %s in %.1fs", out, base.num_shape,
                result.model.num_shape - base.num_shape, embedding_path_for(out).name, time.perf_counter() - t0)
    return record


__all__ = ["embedding_path_for", "learn_from_manifest"]
