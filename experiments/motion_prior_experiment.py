"""The motion-prior experiment at this project's scale: one prior trained on a small set and on a larger
set of annotated clips, both scored on held-out clips beside holding the start pose and a linear AR(2)
model fitted to the same training set.

Data: synthetic ground-truth motion (``neuface_jax.synthetic.motion.generate_motion`` on the demo head,
its blink and lip components driven) written in the annotation ``params.npz`` format with a
``metrics.json`` giving the frame rate (a third of the large set at 30 fps, resampled to 25 by the
loader) and short invalid runs in some clips (excluded from training windows), in
``annotate-dataset`` folder layout (``<root>/<clip_id>/{params.npz,done.json}``).

    python experiments/motion_prior_experiment.py --work /tmp/motion_prior_exp --steps 1500

Stages (each skipped when its output exists, so the script can be re-run after an interruption):
data → train small → train large → evaluate → render one 10 s clip → results JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

import flame_jax
from neuface_jax.common import log as log_lib
from neuface_jax.common.atomic import atomic_write
from neuface_jax.media import export as export_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import evaluate as evaluate_lib
from neuface_jax.motion_prior import generate as generate_lib
from neuface_jax.motion_prior import model as model_lib
from neuface_jax.motion_prior import train as train_lib
from neuface_jax.synthetic import motion as motion_lib

logger = logging.getLogger("neuface_jax.experiments.motion_prior")
RESULTS = Path(__file__).resolve().parent / "results" / "motion_prior.json"
COMMAND = "python experiments/motion_prior_experiment.py "


def write_synthetic_set(root: Path, seeds, seconds: float, *, fps_30_every: int = 0, gaps_every: int = 0) -> None:
    """Ground-truth clips in annotate-dataset layout (skips clips already written)."""
    names = list(flame_jax.DEMO_EXPRESSION_NAMES)
    blink, speech = names.index("blink"), (names.index("lips_apart"), names.index("pucker"))
    for k, seed in enumerate(seeds):
        d = root / f"clip_{seed:05d}"
        if (d / data_lib.DONE_FILE).is_file():
            continue
        fps = 30.0 if fps_30_every and k % fps_30_every == fps_30_every - 1 else 25.0
        t = int(round(seconds * fps))
        m = motion_lib.generate_motion(num_frames=t, n_shape=100, n_expr=50, seed=seed, blink_component=blink,
                                       speech_components=speech, config=motion_lib.MotionConfig(fps=fps))
        data_lib.write_params(d / data_lib.PARAMS_FILE, m["expression"], m["pose"], m["shape"], fps=fps,
                              method="synthetic-ground-truth")
        if gaps_every and k % gaps_every == gaps_every - 1:  # a face-less run, flagged invalid as annotate does
            with np.load(d / data_lib.PARAMS_FILE) as z:
                arrays = {n: z[n] for n in z.files}
            a = int(0.4 * t)
            arrays["valid"][a : a + int(0.5 * fps)] = False
            atomic_write(d / data_lib.PARAMS_FILE, lambda fh: np.savez(fh, **arrays))
        (d / data_lib.DONE_FILE).write_text(json.dumps({"clip_id": d.name}) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/motion_prior_exp")
    ap.add_argument("--small", type=int, default=4, help="clips in the small set")
    ap.add_argument("--large", type=int, default=96, help="clips in the large set")
    ap.add_argument("--held_out", type=int, default=24)
    ap.add_argument("--clip_seconds", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--render_seconds", type=float, default=10.0)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--ablation", action="store_true", help="compare model variants on the large set instead")
    args = ap.parse_args(argv)
    log_lib.configure()
    work = Path(args.work)
    t0 = time.perf_counter()
    # Disjoint seed ranges: held-out clips share nothing with either training set.
    write_synthetic_set(work / "small", range(1000, 1000 + args.small), args.clip_seconds)
    write_synthetic_set(work / "large", range(2000, 2000 + args.large), args.clip_seconds, fps_30_every=3, gaps_every=5)
    write_synthetic_set(work / "held_out", range(9000, 9000 + args.held_out), 12.0)
    seconds = {"data": time.perf_counter() - t0}
    if args.ablation:
        ablation(work, args.steps, args.batch, args.samples, Path(args.results).with_name("motion_prior_ablation.json"))
        return 0

    prior_config = model_lib.PriorConfig()
    config = train_lib.TrainConfig(steps=args.steps, batch=args.batch, checkpoint_every=max(1, args.steps // 5),
                                   val_fraction=0.1)
    progress = log_lib.progress_factory(interval=30)
    results = {}
    for name in ("small", "large"):
        t = time.perf_counter()
        results[name] = train_lib.train([work / name], work / f"prior_{name}", prior_config, config, progress=progress)
        seconds[f"train_{name}"] = time.perf_counter() - t

    t = time.perf_counter()
    priors = {f"prior (small, {args.small} clips)": train_lib.load_prior(work / "prior_small"),
              f"prior (large, {args.large} clips)": train_lib.load_prior(work / "prior_large")}
    held_out = train_lib.load_clips([work / "held_out"], config)
    ar_data = {"linear AR(2) (small)": train_lib.load_clips([work / "small"], config),
               "linear AR(2) (large)": train_lib.load_clips([work / "large"], config)}
    doc = evaluate_lib.compare(priors, held_out, ar_data=ar_data, seconds=10.0, samples=args.samples)
    seconds["evaluate"] = time.perf_counter() - t

    large = priors[f"prior (large, {args.large} clips)"]
    speed = generation_speed(large, held_out[0])
    t = time.perf_counter()
    clip = held_out[0]
    cont = generate_lib.continue_clip(large, clip, 2, seconds=args.render_seconds, samples=2, seed=0)
    paths = generate_lib.write_continuations(cont, work / "generated", render=1, size=256)
    seconds["render"] = time.perf_counter() - t

    table = evaluate_lib.markdown_table(doc["rows"], list(next(iter(doc["rows"].values())).keys()))
    out = {
        "command": COMMAND + " ".join(sys.argv[1:] if argv is None else argv),
        "data": {"small_clips": args.small, "large_clips": args.large, "held_out_clips": args.held_out,
                 "clip_seconds": args.clip_seconds,
                 "source": "synthetic ground truth (generate_motion), annotation format"},
        "prior_config": prior_config.to_dict(), "train_config": config.__dict__, "training": results,
        "evaluation": doc, "generation_speed": speed, "rendered": [str(p) for p in paths], "seconds": seconds,
        "table_markdown": table,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    export_lib.write_json(args.results, out)
    print(table)
    print(json.dumps(speed))
    return 0


VARIANTS = {  # name: (PriorConfig fields, TrainConfig fields)
    "decoder variance, no scheduled sampling, KL 1":
        (dict(decoder_variance=True), dict(sampling_max=0.0, kl_weight=1.0)),
    "deterministic decoder, scheduled sampling 0.5, KL 0.05":
        (dict(decoder_variance=False), dict(sampling_max=0.5, kl_weight=0.05)),
    "deterministic decoder, scheduled sampling 0.5, KL 0.01":
        (dict(decoder_variance=False), dict(sampling_max=0.5, kl_weight=0.01)),
}


def ablation(work: Path, steps: int, batch: int, samples: int, results: Path) -> None:
    """Model variants trained on the large set with the same budget, scored on the held-out clips."""
    progress = log_lib.progress_factory(interval=60)
    rows, timing = {}, {}
    for name, (model_kw, train_kw) in VARIANTS.items():
        config = train_lib.TrainConfig(steps=steps, batch=batch, checkpoint_every=steps, **train_kw)
        folder = work / ("ablation_" + "".join(ch if ch.isalnum() else "_" for ch in name))
        t = time.perf_counter()
        train_lib.train([work / "large"], folder, model_lib.PriorConfig(**model_kw), config, progress=progress)
        timing[name] = time.perf_counter() - t
        held_out = train_lib.load_clips([work / "held_out"], config)
        doc = evaluate_lib.compare({name: train_lib.load_prior(folder)}, held_out, seconds=10.0, samples=samples)
        rows[name] = doc["rows"][name]
        rows["held-out data"] = doc["rows"]["held-out data"]
        logger.info("%s: %s", name, {k: round(rows[name][k], 3) for k in ("fd", "w_expr", "beyond_3sigma",
                                                                          "drift_10s")})
    table = evaluate_lib.markdown_table(rows, list(rows[name].keys()))
    export_lib.write_json(results, {"command": COMMAND + " ".join(sys.argv[1:]),
                                    "steps": steps, "batch": batch, "rows": rows, "train_seconds": timing,
                                    "table_markdown": table})
    print(table)


def generation_speed(prior, clip, samples: int = 16, seconds: float = 10.0) -> dict:
    """Seconds for ``samples`` × ``seconds`` continuations after compilation (best of 5)."""
    hist = data_lib.clip_state(data_lib.resample(clip, prior.fps), prior.config.layout)[:prior.config.history]
    n = int(round(seconds * prior.fps))
    t = time.perf_counter()
    generate_lib.sample(prior, hist, clip.shape, num_frames=n, num_samples=samples, seed=0)
    first = time.perf_counter() - t
    runs = []
    for seed in range(1, 6):
        t = time.perf_counter()
        generate_lib.sample(prior, hist, clip.shape, num_frames=n, num_samples=samples, seed=seed)
        runs.append(time.perf_counter() - t)
    return {"samples": samples, "frames": n, "first_call_s": first, "after_compilation_s": min(runs)}


if __name__ == "__main__":
    raise SystemExit(main())
