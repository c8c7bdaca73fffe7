r"""What separates the learned model from the oracle on out-of-span identities: the prior, or the span?

    nice -n 10 python experiments/fml_prior_diagnostic.py --work_dir=W [--train_clips=32] \
        [--model=learned.npz] [--learn_steps=200] \
        [--diagnostic_out=experiments/results/fml_prior_diagnostic_n32.json]

Uses the world and clip folders of ``fml_synthetic.py`` (same ``--work_dir``; the clips must exist:
three-view training clips under ``views_3/train``, monocular validation and held-out clips under
``mono/``); of its flags, ``--work_dir``, ``--base_components``, ``--extra_fields``,
``--extra_amplitude_mm``, ``--frames``, ``--test_clips`` and ``--learn_steps`` apply here. Every row
fits the validation and held-out clips (landmarks only, one identity per clip) and scores the
neutral identity mesh (face, similarity-aligned, mm; paired difference to the base ± its standard
error).

The question: an out-of-span identity also carries a correlated pattern of base coefficients (the
withheld fields' part inside the base identity span). A diagonal prior makes that pattern expensive;
a full Gaussian prior over the joint coefficients would not. Rows:

* ``oracle`` (the true fields as components) and ``off_identity`` (the fields with their part in the
  base identity span removed: the *same* span, other coordinates), both with the diagonal prior;
* ``off_identity`` with the exact joint covariance of its coordinates (``T Tᵀ`` for
  ``z' = T z``), applied by an eigen-rotation of the identity basis (prior weights = eigenvalues)
  or by a whitening (unit-variance coordinates, equal weights): one objective, two parametrizations
  of the same Adam fit;
* the same with the covariance *estimated* from the training clips' fitted identities;
* the learned model (its recorded prior), with a joint prior from its own fits of the training
  clips, and from the least-squares coordinates of the *true* training identities in its span (the
  best covariance its coordinates could have);
* the fields projected onto the learned model's span, with their own (independent) coordinates:
  what any prior could reach inside that span.

Covariances are second moments (zero mean, like the priors) in units of one prior variance, shrunk
toward the diagonal prior they replace: ``(1 - α) C + α C₀`` (``--alphas``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import flame_jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fml_synthetic as fs  # noqa: E402  (the world and its clips: a sibling script, not a package)
from neuface_jax.model_learning import fit as mfit  # noqa: E402
from neuface_jax.model_learning import learn as learn_lib  # noqa: E402
from neuface_jax.model_learning import model_file  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train_clips", 32, "Training clips (the first of views_3/train).")
flags.DEFINE_string("model", None, "A learned model file to diagnose (else one is learned on --train_clips).")
flags.DEFINE_list("alphas", ["0.3", "0.6"], "Shrinkage of the estimated covariances toward the diagonal prior.")
flags.DEFINE_float("truth_variance", 0.64, "Variance of the world's coefficients (synth draws N(0, 0.8²)).")
flags.DEFINE_string("diagnostic_out", "experiments/results/fml_prior_diagnostic.json", "Results JSON.")

KINDS = ("val_out", "val_in", "test_out", "test_in")


def reparametrized(model: flame_jax.FlameModel, precision, whiten: bool, unit: float):
    """``model`` with its identity basis re-expressed so the prior ``z·P·z`` is diagonal:
    ``(model', weights)``. Rotation: ``z = U y``, weights = the eigenvalues of ``P``; whitening:
    ``z = U Λ^-½ y / √unit``, every weight ``unit`` (one prior variance per coordinate)."""
    lam, u = np.linalg.eigh(np.asarray(precision, np.float64))
    if np.any(lam <= 0):
        raise ValueError(f"precision is not positive definite (smallest eigenvalue {lam.min():.3g})")
    m = u * np.sqrt(unit / lam) if whiten else u
    weights = np.full(len(lam), unit) if whiten else lam
    a = model.to_numpy()
    sd = np.einsum("vcs,st->vct", a["shapedirs"].astype(np.float64), m).astype(np.float32)
    out = flame_jax.FlameModel.from_arrays(
        v_template=a["v_template"], shapedirs=sd, exprdirs=a["exprdirs"], posedirs=a["posedirs"],
        lbs_weights=a["weights"], joint_regressor=a["J_regressor"], faces=a["f"], parents=a["parents"],
        name=model.name, source=model.name)
    return out, weights.astype(np.float32)


def joint_precision(second_moment, diagonal_weights, alpha: float, unit: float) -> np.ndarray:
    """Precision (in prior-weight units) of ``second_moment`` shrunk toward the covariance the diagonal
    prior ``diagonal_weights`` stands for (``unit / w_i`` per coefficient)."""
    c0 = np.diag(unit / np.asarray(diagonal_weights, np.float64))
    return np.linalg.inv((1.0 - alpha) * np.asarray(second_moment, np.float64) + alpha * c0) * unit


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    t_all = time.perf_counter()
    work = Path(FLAGS.work_dir)
    fs.BASE = base = dataclasses.replace(flame_jax.demo_model().truncate(n_shape=FLAGS.base_components),
                                         name=f"demo head, first {FLAGS.base_components} identity components")
    s0 = base.num_shape
    unit = 1.0 / s0  # a base coefficient's prior weight (mean of squares over the base)
    fields = fs.extra_fields(base, FLAGS.extra_fields, FLAGS.extra_amplitude_mm)
    nf = len(fields)
    world = model_file.append_identity_components(base, fields, "world")
    flat = fields.reshape(nf, -1).astype(np.float64)
    span_b = learn_lib.complement_projector(base, expression=False).astype(np.float64)
    off_id = model_file.append_identity_components(base, flat - (flat @ span_b) @ span_b.T, "off identity")
    face = flame_jax.demo_vertex_masks()["face"]
    sets = {k: fs.load(work / "mono" / k, FLAGS.frames, FLAGS.test_clips) for k in KINDS}
    truth = {k: world if k.endswith("out") else base for k in KINDS}
    train = fs.load(work / "views_3" / "train", FLAGS.frames, FLAGS.train_clips)
    if len(train) < FLAGS.train_clips:
        raise ValueError(f"{work / 'views_3' / 'train'}: {len(train)} clips, --train_clips={FLAGS.train_clips}")

    def errors(model, weights, kind):
        corp = sets[kind]
        fits = mfit.fit_clips(model, corp.embedding, [c.data for c in corp.clips],
                              shape_prior=None if weights is None else np.asarray(weights, np.float32))
        pred = mfit.identity_vertices(model, fits.params.shape)
        true = mfit.identity_vertices(truth[kind], np.stack([c.truth["shape"] for c in corp.clips]))
        return mfit.identity_error_mm(pred, true, face)["vertex_error_similarity_mm"]

    base_err = {k: errors(base, None, k) for k in KINDS}
    rows = [{"label": "base", **{k: float(v.mean()) for k, v in base_err.items()}}]
    print("base " + "  ".join(f"{k} {v.mean():.3f}" for k, v in base_err.items()), flush=True)

    def row(label, model, weights, kinds=KINDS):
        r = {"label": label}
        for k in kinds:
            e = errors(model, weights, k)
            d = e - base_err[k]
            r[k], r[k + "_delta"] = float(e.mean()), float(d.mean())
            r[k + "_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
        rows.append(r)
        cells = (f"{k} {r[k]:.3f} ({r[k + '_delta']:+.3f}±{r[k + '_se']:.3f})" for k in kinds)
        print(f"{label:70s} " + "  ".join(cells), flush=True)

    def diag(n, scale=1.0):
        return mfit.shape_prior_weights(n, s0, scale).astype(np.float64)

    def fitted_moment(model, weights):
        fits = mfit.fit_clips(model, train.embedding, [c.data for c in train.clips],
                              shape_prior=np.asarray(weights, np.float32))
        z = np.asarray(fits.params.shape, np.float64)
        return z.T @ z / len(z)

    alphas = [float(a) for a in FLAGS.alphas]
    row("oracle (true fields), diagonal prior", world, diag(s0 + nf))
    row("off identity, diagonal prior", off_id, diag(s0 + nf))
    # z' = T z: the off-identity coordinates of a world identity z (base coefficients of the fields: a).
    a = np.linalg.lstsq(np.asarray(base.basis[:s0], np.float64).T, flat.T, rcond=None)[0]
    t = np.block([[np.eye(s0), a], [np.zeros((nf, s0)), np.eye(nf)]])
    exact = joint_precision(t @ t.T, diag(s0 + nf), 0.0, unit)
    for whiten in (False, True):
        m, w = reparametrized(off_id, exact, whiten, unit)
        row(f"off identity, exact joint covariance, {'whitened' if whiten else 'rotated'}", m, w)
    c_fit = fitted_moment(off_id, diag(s0 + nf))
    c_fit_scale = float(np.mean(np.diag(c_fit)[:s0]))  # base coefficients at one prior variance, as below
    for alpha in alphas:
        m, w = reparametrized(off_id, joint_precision(c_fit / c_fit_scale, diag(s0 + nf), alpha, unit), True, unit)
        row(f"off identity, covariance of its training fits (a={alpha}), whitened", m, w)

    # The learned model.
    seconds = {}
    if FLAGS.model:
        learned = flame_jax.load_model(FLAGS.model)
        weights = flame_jax.load_shape_prior(FLAGS.model)
        source = FLAGS.model
    else:
        t0 = time.perf_counter()
        cfg = dataclasses.replace(learn_lib.LearnConfig(), steps=FLAGS.learn_steps or learn_lib.LearnConfig().steps)
        res = learn_lib.learn_model(base, train, cfg)
        learned, source = res.model, f"learned here ({FLAGS.train_clips} clips)"
        weights = model_file.shape_prior_of(res.record, learned.num_shape)
        seconds["learning"] = time.perf_counter() - t0
    s = learned.num_shape
    weights = np.asarray(weights, np.float64)
    row("learned, its recorded prior", learned, weights)
    c_own = fitted_moment(learned, weights)
    basis = np.asarray(learned.basis[:s], np.float64)
    true_off = np.stack([c.truth["shape"] for c in train.clips]).astype(np.float64) @ np.asarray(
        world.basis[: s0 + nf], np.float64)
    z_ls = np.linalg.lstsq(basis.T, true_off.T, rcond=None)[0].T
    c_true = z_ls.T @ z_ls / len(z_ls) / FLAGS.truth_variance
    for alpha in alphas:
        m, w = reparametrized(learned, joint_precision(c_own / np.mean(np.diag(c_own)[:s0]), weights, alpha, unit),
                              True, unit)
        row(f"learned, covariance of its training fits (a={alpha}), whitened", m, w)
        m, w = reparametrized(learned, joint_precision(c_true, weights, alpha, unit), True, unit)
        row(f"learned, covariance of the true training identities in its span (a={alpha}), whitened", m, w)
    q, _ = np.linalg.qr(basis.T)
    proj = (flat @ q) @ q.T
    row("fields projected onto the learned span, diagonal prior",
        model_file.append_identity_components(base, proj, "fields in the learned span"), diag(s0 + nf))
    fidx = (3 * face[:, None] + np.arange(3)).ravel()

    def residual(x):
        return [float(v) for v in np.linalg.norm((flat - x)[:, fidx], axis=1) / np.linalg.norm(flat[:, fidx], axis=1)]

    spans = {"base": residual((flat @ span_b) @ span_b.T), "base_and_learned": residual(proj)}
    print("face share of each field off span(base):         ", np.round(spans["base"], 2).tolist())
    print("face share of each field off span(base + learned):", np.round(spans["base_and_learned"], 2).tolist())
    summary = {
        "command": " ".join(["python"] + sys.argv),
        "setup": {"work_dir": str(work), "train_clips": FLAGS.train_clips, "model": source, "alphas": alphas,
                  "clips_per_kind": FLAGS.test_clips, "frames": FLAGS.frames,
                  "second_moments": {"learned_own_fits_diag_mean_base": float(np.mean(np.diag(c_own)[:s0])),
                                     "learned_own_fits_diag_mean_learned": float(np.mean(np.diag(c_own)[s0:])),
                                     "off_identity_fits_diag_mean_base": c_fit_scale}},
        "field_share_off_span_face": spans,
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "seconds": dict(seconds, total=time.perf_counter() - t_all),
        "rows": rows,
    }
    Path(FLAGS.diagnostic_out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.diagnostic_out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {FLAGS.diagnostic_out}")


if __name__ == "__main__":
    app.run(main)
