r"""Face-model learning on the shared real clips: learn on first halves, evaluate on second halves.

    NEUFACE_SHARED_DATA=../shared/data nice -n 10 python experiments/fml_real.py \
        [--components=2] [--shared_offset=apply|drop] [--out=experiments/results/fml_real.json]

Base: the demo head (100 identity components). The monocular clips of ``$NEUFACE_SHARED_DATA/videos``
are prepared as ``annotate`` prepares them (MediaPipe with its landmark cache, 68 points, static
contour). Runs:

* **all**: learn ``--components`` components (and, with ``--shared_offset=apply``, the offset all
  clips share, added to the template) on every clip's first half; fit every clip's second
  half with the base and with the learned model (one identity per half, landmarks only);
* **leave one out**: for each clip, learn on the *other* clips' first halves and fit this clip's
  second half — a clip the learning never saw.

Reported: NME (% of the inter-ocular distance, the 68 points) of the fitted landmarks. Landmarks
are the only measurement here (no ground-truth geometry), and a model with more identity
components always fits landmarks at least as well when the identity is re-fitted, so two controls
check whether the gain is more than extra freedom fitting landmark noise:

* **random components**: the learned model's template offset with K *random* smooth components
  (same basis, same size, same projection as the learned ones) instead of the learned ones, and the
  **offset only** (no components);
* **held-out points**: every model fits the second halves from the even-numbered landmarks only
  and is scored on the odd-numbered ones, which the fit never saw (noise in the fitted points
  cannot be fitted away there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import flame_jax
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.dataset.manifest import ClipEntry
from neuface_jax.model_learning import corpus as corpus_lib
from neuface_jax.model_learning import fit as mfit
from neuface_jax.model_learning import learn as learn_lib
from neuface_jax.model_learning import model_file

FLAGS = flags.FLAGS
flags.DEFINE_integer("components", 2, "Learned identity components.")
flags.DEFINE_integer("frames", 16, "Frames kept per half clip.")
flags.DEFINE_integer("learn_steps", None, "Override LearnConfig.steps.")
flags.DEFINE_float("expression_prior_scale", None, "Override LearnConfig.expression_prior_scale.")
flags.DEFINE_float("test_prior", None, "Override LearnConfig.test_prior (the learned coefficients' test-time prior; "
                   "the control models' extra coefficients get the same).")
flags.DEFINE_float("refine_rate", None, "Override LearnConfig.refine_rate.")
flags.DEFINE_enum("shared_offset", "apply", ["drop", "apply"], "LearnConfig.shared_offset: the demo head's mean "
                  "differs from real people's, so the offset all clips share is part of what is learned here.")
flags.DEFINE_string("out", "experiments/results/fml_real.json", "Results JSON.")


def nme_percent(fit, corpus, points=None) -> list[float]:
    """Per clip NME (%) of the fitted landmarks, over ``points`` ([L] bool, default all)."""
    out = []
    for i, c in enumerate(corpus.clips):
        vis = np.asarray(c.data.landmarks_mask) * np.asarray(c.data.frame_mask)[..., None]
        if points is not None:
            vis = vis * np.asarray(points, np.float32)
        pred = fit.landmarks2d[i][: c.data.num_frames, : c.data.num_views]
        out.append(float(metrics_lib.nme(pred, np.asarray(c.data.landmarks), vis > 0)))
    return out


def with_points(corpus, points):
    """The corpus with only ``points`` ([L] bool) visible to the fit."""
    clips = tuple(dataclasses.replace(c, data=dataclasses.replace(
        c.data, landmarks_mask=np.asarray(c.data.landmarks_mask) * np.asarray(points, np.float32))) for c in corpus.clips)
    return dataclasses.replace(corpus, clips=clips)


def controls(base, learned, res, seed: int = 0):
    """``(random, offset_only)`` models: the learned template offset with K random smooth components of
    the learned ones' sizes (kept apart from the base spans as the learned ones were), and with none."""
    k = learned.num_shape - base.num_shape
    offset = np.asarray(learned.v_template) - np.asarray(base.v_template)
    phi, _ = learn_lib.laplacian_basis(base, res.record["config"]["basis_size"])
    rng = np.random.default_rng(seed)
    d = np.einsum("vm,mck->kvc", phi.astype(np.float64), rng.normal(size=(phi.shape[1], 3, k))).reshape(k, -1)
    apart = res.record["learned"]["orthogonal_to"]  # kept apart from what the learned ones were
    if apart != "none":
        q = learn_lib.complement_projector(base, expression=apart == "identity_expression").astype(np.float64)
        d = d - (d @ q) @ q.T
    d = np.linalg.qr(d.T)[0].T  # orthonormal rows
    sizes = np.linalg.norm(res.components.reshape(k, -1), axis=1)
    random = model_file.append_identity_components(base, d * sizes[:, None], "random", template_offset=offset)
    offset_only = model_file.append_identity_components(base, np.zeros((0, base.num_vertices, 3)), "offset",
                                                        template_offset=offset)
    return random, offset_only


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    shared = Path(os.environ.get("NEUFACE_SHARED_DATA", "../shared/data"))
    root = shared / "videos"
    videos = sorted(root.glob("*.mp4"))
    if not videos:
        raise SystemExit(f"no videos under {root} (set NEUFACE_SHARED_DATA)")
    entries = [ClipEntry(clip_id=v.stem, kind="video", inputs=(str(v),), view_names=("front",)) for v in videos]
    base = flame_jax.demo_model()
    emb = flame_jax.demo_landmark_embedding()
    landmarker = str(shared / "mediapipe" / "face_landmarker.task")
    halves = {part: corpus_lib.load_corpus(entries, base, emb, corpus_lib.CorpusConfig(part=part, max_frames=FLAGS.frames),
                                           face_landmarker=landmarker)
              for part in ("first_half", "second_half")}
    cfg = learn_lib.LearnConfig(shape_components=FLAGS.components, shared_offset=FLAGS.shared_offset)
    overrides = {"steps": FLAGS.learn_steps, "expression_prior_scale": FLAGS.expression_prior_scale,
                 "test_prior": FLAGS.test_prior, "refine_rate": FLAGS.refine_rate}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    test = halves["second_half"]

    def fit_clips(model, embedding, clips):
        """Test-time fit; extra coefficients (learned or control) under the learned model's prior."""
        prior = None if model.num_shape == base.num_shape else mfit.shape_prior_weights(
            model.num_shape, base.num_shape, cfg.test_prior)
        return mfit.fit_clips(model, embedding, clips, shape_prior=prior)

    base_fit = fit_clips(base, test.embedding, [c.data for c in test.clips])
    results = {"clips": [c.clip_id for c in test.clips], "base_nme": nme_percent(base_fit, test)}

    t0 = time.perf_counter()
    res = learn_lib.learn_model(base, halves["first_half"], cfg)
    learn_s = time.perf_counter() - t0
    fit = fit_clips(res.model, test.embedding, [c.data for c in test.clips])
    results["all"] = {"learned_nme": nme_percent(fit, test), "seconds": res.record["seconds"],
                      "component_rms_mm": res.record["learned"]["component_rms_mm"],
                      "shared_offset_rms_mm": res.record["learned"]["shared_offset_rms_mm"],
                      "landmark_l1_first_halves": res.record["landmark_l1"], "wall_s": learn_s}

    # Controls: the same freedom with random directions; landmarks the fit never saw.
    random_model, offset_model = controls(base, res.model, res)
    models = {"base": base, "learned": res.model, "random_components": random_model, "offset_only": offset_model}
    results["controls"] = {name: nme_percent(fit_clips(m, test.embedding, [c.data for c in test.clips]), test)
                           for name, m in models.items() if name not in ("base", "learned")}
    even = np.arange(68) % 2 == 0
    sparse = with_points(test, even)
    results["held_out_points"] = {
        name: nme_percent(fit_clips(m, sparse.embedding, [c.data for c in sparse.clips]), test, ~even)
        for name, m in models.items()}

    results["leave_one_out"] = []
    for i, clip in enumerate(test.clips):
        train = halves["first_half"]
        others = corpus_lib.Corpus(tuple(c for j, c in enumerate(train.clips) if j != i), train.embedding,
                                   train.landmark_set, train.contour)
        r = learn_lib.learn_model(base, others, dataclasses.replace(cfg, shape_components=min(cfg.shape_components,
                                                                                                  len(others))))
        held = corpus_lib.Corpus((clip,), test.embedding, test.landmark_set, test.contour)
        f = fit_clips(r.model, held.embedding, [clip.data])
        results["leave_one_out"].append({"clip": clip.clip_id, "base_nme": results["base_nme"][i],
                                         "learned_nme": nme_percent(f, held)[0]})

    print("\n| clip | base NME % | learned on all first halves | learned without this clip |")
    print("|---|---|---|---|")
    for i, cid in enumerate(results["clips"]):
        print(f"| {cid} | {results['base_nme'][i]:.2f} | {results['all']['learned_nme'][i]:.2f} | "
              f"{results['leave_one_out'][i]['learned_nme']:.2f} |")
    print("\ncontrols (second halves, NME %): " + "; ".join(
        f"{n} {np.mean(v):.2f}" for n, v in results["controls"].items()))
    print("held-out points (fit on even, NME % on odd landmarks): " + "; ".join(
        f"{n} {np.mean(v):.2f}" for n, v in results["held_out_points"].items()))
    print(f"learning on {len(test)} first halves ({FLAGS.frames} frames each): "
          f"{res.record['seconds']['per_epoch']:.3f} s/epoch, {learn_s:.0f} s in all")
    summary = {"command": " ".join(["python"] + sys.argv), "learn_config": dataclasses.asdict(cfg),
               "fit_config": dataclasses.asdict(mfit.ClipFitConfig()), "frames": FLAGS.frames,
               "platform": {"python": platform.python_version(), "machine": platform.machine()}, "results": results}
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
