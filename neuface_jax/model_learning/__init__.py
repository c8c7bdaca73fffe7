"""Learning the face model itself from a corpus of clips (``neuface-jax learn-model``; docs/model_learning.md).

``load_corpus`` (a manifest → landmark targets, optionally face crops), ``learn_model`` (corrective
identity components, smooth fields beside the base's identity space, learned jointly with one
identity per clip; optionally per-vertex albedo components from the crops), ``save_learned_model`` /
``read_learning_record`` / ``read_albedo_model`` (an ordinary FLAME-format ``.npz`` with the
learning record and the albedo model inside), ``fit_clips`` and ``fit_albedo`` (multi-frame
reconstruction of new clips with any model, any number of frames and views; ``shape_prior_of`` the
learned coefficients' test-time prior a model's record asks for) and
``learn_from_manifest`` (the command).
"""

from neuface_jax.model_learning.albedo import fit_albedo
from neuface_jax.model_learning.corpus import Corpus, CorpusClip, CorpusConfig, load_corpus
from neuface_jax.model_learning.fit import ClipFitConfig, LandmarkClip, fit_clips, identity_error_mm, identity_vertices
from neuface_jax.model_learning.learn import LearnConfig, LearnResult, learn_model
from neuface_jax.model_learning.model_file import (
    read_albedo_model,
    read_learning_record,
    save_learned_model,
    shape_prior_of,
)
from neuface_jax.model_learning.run import learn_from_manifest

__all__ = [
    "ClipFitConfig", "Corpus", "CorpusClip", "CorpusConfig", "LandmarkClip", "LearnConfig", "LearnResult",
    "fit_albedo", "fit_clips", "identity_error_mm", "identity_vertices", "learn_from_manifest", "learn_model", "load_corpus",
    "read_albedo_model", "read_learning_record", "save_learned_model", "shape_prior_of",
]
