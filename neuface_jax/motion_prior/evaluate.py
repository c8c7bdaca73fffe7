"""Scores generated motion against held-out real sequences.

Every method (the prior, the baselines) is given as continuations ``[G, S, T, D]``: S samples from
each of G start frames, T frames at ``fps`` after the start, raw ``data.Layout`` states. The real
reference is a list of held-out sequences (each starting at a start frame) with their identities.

* realism — ``fd``: Fréchet distance between Gaussian fits of per-window motion features (mean,
  standard deviation and mean absolute velocity of the leading expressions, jaw opening and head
  rotation over 2 s windows — shorter for shorter sequences —, scaled by the real features' spread); ``w_expr`` / ``w_jaw`` /
  ``w_head``: 1-Wasserstein distances between the per-frame speed distributions (expression
  coefficient speed, jaw and head angular speed in rad/s).
* diversity — mean pairwise distance (normalized state, averaged over time) of the samples of one start.
* smoothness against the data — ``accel_spectrum`` / ``jerk_spectrum``: mean |log10| ratio of the
  acceleration and jerk power spectra to the real ones (0 = same; too smooth and too jittery both
  score high); ``jerk_ratio``: RMS jerk over the real RMS jerk; ``blinks_per_min`` (real: the
  reference's value).
* plausibility — ``lip_penetration`` / ``eyelid_penetration``: fraction of frames whose inner
  upper-lip (upper-eyelid) landmarks lie below the lower ones by more than ``tol`` (in the head's
  frame, model units); ``beyond_3sigma``: fraction of frames with a summary channel (leading
  expressions, jaw opening, head rotation) beyond ±3σ of the real data; ``drift_{2,5,10}s``: mean
  distance from the start state (normalized RMS) at that time, ``drift_{..}s_head_deg`` the head's
  angle from its start (degrees), ``drift_err_*`` their absolute differences from the real values.
* continuity — mean first-step change over the real mean one-frame change (1 = seamless).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np
from scipy import linalg, stats
from scipy.spatial.transform import Rotation

import flame_jax
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import generate

WINDOW_S = 2.0
DRIFT_S = (2.0, 5.0, 10.0)
#: 68-point iBUG indices: (upper, lower) inner lip and eyelid pairs.
LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
EYELID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
    """A FLAME-format model and its 68-point embedding (for the lip and eyelid proxies)."""

    model: object
    embedding: object

    @classmethod
    def demo(cls) -> "Face":
        return cls(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
    """Held-out real sequences [T_i, D] (raw states, each starting at a start frame) and identities."""

    sequences: list[np.ndarray]
    shapes: list[np.ndarray]
    layout: data_lib.Layout
    fps: float
    face: Face
    tol: float = 1e-4

    @property
    def window(self) -> int:
        """Frames per feature / spectrum window: 2 s, or less for shorter sequences."""
        return int(max(4, min(round(WINDOW_S * self.fps), min(len(s) for s in self.sequences) - 3)))

    @property
    def mean(self) -> np.ndarray:
        return np.concatenate(self.sequences).mean(0)

    @property
    def std(self) -> np.ndarray:
        s = np.concatenate(self.sequences).std(0)
        return np.where(s < 1e-6, 1.0, s)


def _channels(layout: data_lib.Layout) -> np.ndarray:
    sl = layout.slices()
    return np.r_[np.arange(min(6, layout.n_expr)), sl["jaw"].start, np.arange(sl["head"].start, sl["head"].stop)]


def window_features(seqs: Sequence[np.ndarray], layout, fps: float, w: int) -> np.ndarray:
    """Per ``w``-frame window: mean, standard deviation and mean absolute velocity of the summary channels."""
    ch = _channels(layout)
    out = []
    for s in seqs:
        for a in range(0, len(s) - w + 1, w):
            x = s[a : a + w, ch]
            out.append(np.concatenate([x.mean(0), x.std(0), np.abs(np.diff(x, axis=0)).mean(0) * fps]))
    return np.asarray(out)


def frechet(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussian fits of the rows of ``a`` and ``b``."""
    ma, mb = a.mean(0), b.mean(0)
    ca = np.cov(a.T) + eps * np.eye(a.shape[1])
    cb = np.cov(b.T) + eps * np.eye(b.shape[1])
    root = linalg.sqrtm(ca @ cb)
    return float(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2.0 * np.real(root)))


def speeds(seqs: Sequence[np.ndarray], layout, fps: float) -> dict[str, np.ndarray]:
    """Per-frame speeds: expression coefficients (norm / s), jaw and head angular (rad / s)."""
    sl = layout.slices()
    out = {"expr": [], "jaw": [], "head": []}
    for s in seqs:
        out["expr"].append(np.linalg.norm(np.diff(s[:, sl["expression"]], axis=0), axis=-1) * fps)
        out["jaw"].append(np.linalg.norm(np.diff(s[:, sl["jaw"]], axis=0), axis=-1) * fps)
        r = Rotation.from_rotvec(s[:, sl["head"]].astype(np.float64))
        out["head"].append((r[1:] * r[:-1].inv()).magnitude() * fps)
    return {k: np.concatenate(v) for k, v in out.items()}


def spectrum(seqs: Sequence[np.ndarray], order: int, std: np.ndarray, w: int) -> np.ndarray:
    """Mean power spectrum of the ``order``-th difference of normalized states over ``w``-frame windows."""
    power = []
    for s in seqs:
        d = np.diff(s / std, n=order, axis=0)
        for a in range(0, len(d) - w + 1, w):
            power.append((np.abs(np.fft.rfft(d[a : a + w] - d[a : a + w].mean(0), axis=0)) ** 2).mean(1))
    return np.mean(power, 0)[1:] + 1e-12


@jax.jit
def _landmarks(model, embedding, shape, expression, pose):
    verts = flame_jax.forward(model, shape=shape, expression=expression, pose=pose).vertices
    return flame_jax.landmarks(model, embedding, verts, pose)


def gaps(seqs: Sequence[np.ndarray], shapes: Sequence[np.ndarray], layout, face: Face, batch: int = 1024):
    """(lip gap [n], eyelid gap [n]) per frame of all sequences: upper minus lower landmark height in
    the head's frame (head and neck rotation zeroed), the smallest pair of each."""
    model = face.model
    ne, ns = min(layout.n_expr, model.num_expression), model.num_shape
    expr, pose, shp = [], [], []
    for s, shape in zip(seqs, shapes):
        e, p = data_lib.state_to_params(s, layout, np.zeros(15, np.float32))
        p[:, 0:6] = 0.0
        expr.append(e[:, :ne])
        pose.append(p)
        sh = np.zeros(ns, np.float32)
        sh[: min(ns, len(shape))] = shape[:ns]
        shp.append(np.broadcast_to(sh, (len(s), ns)))
    expr, pose, shp = np.concatenate(expr), np.concatenate(pose), np.concatenate(shp)
    lips, lids = [], []
    for a in range(0, len(expr), batch):
        n = min(batch, len(expr) - a)
        pad = lambda x: np.concatenate([x[a : a + n], np.repeat(x[a : a + 1], batch - n, 0)])  # noqa: E731
        lm = np.asarray(_landmarks(model, face.embedding, pad(shp), pad(expr), pad(pose)))[:n]
        lips.append(np.min([lm[:, u, 1] - lm[:, d, 1] for u, d in LIP_PAIRS], 0))
        lids.append(np.min([lm[:, u, 1] - lm[:, d, 1] for u, d in EYELID_PAIRS], 0))
    return np.concatenate(lips), np.concatenate(lids)


def blink_rate(lid_gap: np.ndarray, lengths: Sequence[int], open_gap: float, fps: float) -> float:
    """Blinks per minute: entries into a gap below half the open-eye gap."""
    count, start = 0, 0
    for n in lengths:
        closed = lid_gap[start : start + n] < 0.5 * open_gap
        count += int(np.sum(np.diff(closed.astype(np.int8)) == 1)) + int(closed[:1].sum())
        start += n
    return float(count / max(sum(lengths) / fps / 60.0, 1e-9))


def drift(seqs: Sequence[np.ndarray], layout, std: np.ndarray, fps: float) -> dict[str, float]:
    """Mean normalized distance from each sequence's first frame, and head angle from it, at DRIFT_S."""
    sl, out = layout.slices(), {}
    for t_s in DRIFT_S:
        t = int(round(t_s * fps))
        use = [s for s in seqs if len(s) > t]
        if not use:
            continue
        out[f"{t_s:g}s"] = float(np.mean([np.sqrt(np.mean(((s[t] - s[0]) / std) ** 2)) for s in use]))
        heads = [Rotation.from_rotvec(s[[0, t], sl["head"]].astype(np.float64)) for s in use]
        out[f"{t_s:g}s_head_deg"] = float(np.degrees(np.mean([(h[1] * h[0].inv()).magnitude() for h in heads])))
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class _Stats:
    features: np.ndarray
    speeds: dict
    accel: np.ndarray
    jerk: np.ndarray
    rms_jerk: float
    step: float
    drift: dict
    open_gap: float
    blinks: float
    lip_pen: float
    lid_pen: float
    beyond: float


def _stats(seqs, shapes, ref: Reference, open_gap: float | None = None) -> _Stats:
    lay, fps, std, mean = ref.layout, ref.fps, ref.std, ref.mean
    lip, lid = gaps(seqs, shapes, lay, ref.face)
    open_gap = float(np.median(lid)) if open_gap is None else open_gap
    ch = _channels(lay)
    z = np.abs((np.concatenate(seqs) - mean) / std)[:, ch]
    jerk = np.concatenate([np.diff(s / std, n=3, axis=0).ravel() for s in seqs])
    return _Stats(
        features=window_features(seqs, lay, fps, ref.window), speeds=speeds(seqs, lay, fps),
        accel=spectrum(seqs, 2, std, ref.window), jerk=spectrum(seqs, 3, std, ref.window),
        rms_jerk=float(np.sqrt(np.mean(jerk**2))),
        step=float(np.mean([np.sqrt(np.mean((np.diff(s, axis=0) / std) ** 2, -1)).mean() for s in seqs])),
        drift=drift(seqs, lay, std, fps), open_gap=open_gap,
        blinks=blink_rate(lid, [len(s) for s in seqs], open_gap, fps),
        lip_pen=float(np.mean(lip < -ref.tol)), lid_pen=float(np.mean(lid < -ref.tol)),
        beyond=float(np.mean(np.any(z > 3.0, -1))),
    )


def reference_stats(ref: Reference) -> _Stats:
    return _stats(ref.sequences, ref.shapes, ref)


def score(continuations: np.ndarray, starts: np.ndarray, shapes: Sequence[np.ndarray], ref: Reference,
          real: _Stats | None = None) -> dict[str, float]:
    """All metrics of one method: continuations [G, S, T, D] after start states [G, D]."""
    real = real or reference_stats(ref)
    g, s = continuations.shape[:2]
    seqs = [np.concatenate([starts[i][None], continuations[i, j]]) for i in range(g) for j in range(s)]
    seq_shapes = [shapes[i] for i in range(g) for _ in range(s)]
    gen = _stats(seqs, seq_shapes, ref, open_gap=real.open_gap)
    std = ref.std
    out = {"fd": _scaled_fd(gen.features, real.features)}
    for k in ("expr", "jaw", "head"):
        out[f"w_{k}"] = float(stats.wasserstein_distance(gen.speeds[k], real.speeds[k]))
    out["diversity"] = _diversity(continuations, std)
    out["accel_spectrum"] = float(np.mean(np.abs(np.log10(gen.accel / real.accel))))
    out["jerk_spectrum"] = float(np.mean(np.abs(np.log10(gen.jerk / real.jerk))))
    out["jerk_ratio"] = gen.rms_jerk / max(real.rms_jerk, 1e-12)
    out["blinks_per_min"] = gen.blinks
    out["lip_penetration"], out["eyelid_penetration"] = gen.lip_pen, gen.lid_pen
    out["beyond_3sigma"] = gen.beyond
    for k, v in gen.drift.items():
        out[f"drift_{k}"] = v
        out[f"drift_err_{k}"] = abs(v - real.drift.get(k, np.nan))
    first = np.sqrt(np.mean(((continuations[:, :, 0] - starts[:, None]) / std) ** 2, -1)).mean()
    out["continuity"] = float(first / max(real.step, 1e-12))
    return out


def reference_row(real: _Stats) -> dict[str, float]:
    """The held-out data's own values of the absolute metrics (the targets)."""
    row = {"blinks_per_min": real.blinks, "lip_penetration": real.lip_pen, "eyelid_penetration": real.lid_pen,
           "beyond_3sigma": real.beyond, "jerk_ratio": 1.0, "continuity": 1.0}
    row.update({f"drift_{k}": v for k, v in real.drift.items()})
    return row


def _scaled_fd(gen: np.ndarray, real: np.ndarray) -> float:
    scale = real.std(0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    return frechet(gen / scale, real / scale)


def _diversity(cont: np.ndarray, std: np.ndarray) -> float:
    g, s = cont.shape[:2]
    if s < 2:
        return 0.0
    z = cont / std
    vals = []
    for i in range(g):
        for a in range(s):
            for b in range(a + 1, s):
                vals.append(np.sqrt(np.mean((z[i, a] - z[i, b]) ** 2, -1)).mean())
    return float(np.mean(vals))


REALISM = ("fd", "w_expr", "w_jaw", "w_head")
PLAUSIBILITY = ("lip_penetration", "eyelid_penetration", "beyond_3sigma", "drift_err_2s", "drift_err_5s",
                "drift_err_10s")


def markdown_table(rows: dict[str, dict[str, float]], columns: Sequence[str] | None = None) -> str:
    """A markdown table: one row per method, one column per metric."""
    columns = list(columns or next(iter(rows.values())).keys())
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, r in rows.items():
        cells = [("" if r.get(c) is None or not np.isfinite(r.get(c, np.nan)) else f"{r[c]:.3g}") for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def held_out_starts(clips: Sequence[data_lib.MotionClip], layout, history: int, num_frames: int):
    """(start histories [G, history, D], real sequences [G, num_frames + 1, D], shapes) from held-out clips:
    per clip, the first valid segment long enough; the start frame is its ``history``-th frame."""
    hists, seqs, shapes = [], [], []
    for c in clips:
        x = data_lib.clip_state(c, layout)
        for a, b in data_lib.segments(c.valid):
            if b - a >= history + num_frames:
                s = a + history - 1
                hists.append(x[a : s + 1])
                seqs.append(x[s : s + num_frames + 1])
                shapes.append(c.shape)
                break
    if not seqs:
        raise ValueError(f"no held-out clip has {history + num_frames} consecutive valid frames")
    return np.stack(hists), seqs, shapes


def compare(priors: dict, held_out: Sequence[data_lib.MotionClip], *, ar_data: dict | None = None,
            seconds: float = 10.0, samples: int = 8, seed: int = 0, face: Face | None = None,
            ar_order: int = 2) -> dict:
    """The evaluation table: each prior (name → ``train.Prior``), hold-the-start, and a linear AR
    baseline per entry of ``ar_data`` (name → training clips it is fitted to), scored on the held-out clips."""
    first = next(iter(priors.values()))
    layout, fps = first.config.layout, first.fps
    history = max([p.config.history for p in priors.values()] + [ar_order])
    num_frames = int(round(seconds * fps))
    clips = [data_lib.resample(c, fps) for c in held_out]
    hists, seqs, shapes = held_out_starts(clips, layout, history, num_frames)
    ref = Reference(seqs, shapes, layout, fps, face or Face.demo())
    real = reference_stats(ref)
    starts = hists[:, -1]
    conts = {name: np.stack([generate.sample(p, h, sh, num_frames=num_frames, num_samples=samples, seed=seed)
                             for h, sh in zip(hists, shapes)]) for name, p in priors.items()}
    conts["hold start"] = np.stack([generate.hold(h, num_frames=num_frames, num_samples=samples) for h in hists])
    for name, ar_clips in (ar_data or {}).items():
        train_seqs = []
        for c in ar_clips:
            x = data_lib.clip_state(data_lib.resample(c, fps), layout)
            train_seqs += [x[a:b] for a, b in data_lib.segments(c.valid)]
        ar = generate.fit_ar(train_seqs, first.norm, order=ar_order)
        conts[name] = np.stack(
            [generate.sample_ar(ar, h, num_frames=num_frames, num_samples=samples, seed=seed) for h in hists])
    rows = {name: score(c, starts, shapes, ref, real) for name, c in conts.items()}
    rows["held-out data"] = reference_row(real)
    return {"rows": rows, "starts": len(seqs), "samples": samples, "seconds": seconds, "fps": fps,
            "realism": list(REALISM), "plausibility": list(PLAUSIBILITY)}
