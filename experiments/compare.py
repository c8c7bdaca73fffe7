r"""The paper's comparisons on the synthetic benchmark: one config per experiment.

    python experiments/compare.py --config=direct_vs_neuface [--seeds=0,1,2] \
        [--out=experiments/results/direct_vs_neuface.json]

``--config=NAME`` loads ``experiments/configs/NAME.py`` (or a path to a ``.py`` file) and calls its
``get_config()``, a plain dict:

* ``seeds``: test-clip seeds (disjoint from the pretraining seeds, which start at 1,000,000);
* ``num_frames``, ``num_epochs``: clip length and NeuFace epochs (direct takes as many Adam steps);
* ``settings``: clips — ``{"name", "views" (a motion.parse_rig spec: "mono", "3", "mead"),
  "noise" (×SynthConfig's landmark noise), "drop" (drop_frame_probability), optional "num_frames"
  and "seeds" (a subset of the seeds, for expensive settings), "realism" (``synth.RealismConfig``
  overrides: MediaPipe detections, occluders, backgrounds, lighting, textures), "withhold_shape"
  (the last K identity components are withheld from the fitted model: identities outside its span)
  and "contour" ("dynamic", the default, or "static": the fitted and true 68 landmarks use a
  mesh-fixed jaw contour, as annotate does for MediaPipe), "fit" (FitConfig overrides for this
  setting: the chunk length of a short clip)}``;
* ``methods``: fitted variants — ``{"name", "method" ("neuface" | "direct"), "init" ("random" |
  "pretrained"), "fit" (FitConfig overrides: learning_rate, loss, chunk_frames, freeze_bn, ...),
  optional "needs_views" (skip settings with fewer views, e.g. 2 for a multi-view-only variant) and
  "only_settings" (names of the settings it runs on)}``;
* ``fit``: FitConfig overrides shared by every method (a setting's ``fit``, then a method's own, win);
* ``encoder``: overrides of the randomly initialized encoder's config (default the small CPU one);
* ``images_for_undetected_frames`` (default True): see ``prepare``;
* ``pretrained``: the pretrained encoder: ``"packaged"`` (default: the checkpoint shipped in
  ``neuface_jax/assets``, ``pretrain.packaged_checkpoint()``) or a checkpoint directory
  (``neuface_jax.synthetic.pretrain.ensure_pretrained`` trains one there first if it is missing);
* ``pretrained_arch``: optional, e.g. ``"resnet50"``: the pretrained folder must exist and hold an
  encoder of this architecture (a prior made elsewhere: nothing is trained in its place).

Every (seed, setting) clip is rendered once and fitted by every method with
``pipeline.fit_methods`` and scored with ``pipeline.evaluate_synthetic`` (the metrics of
``metrics.json`` plus the extra ones against the ground truth: ``accel_error_mm``,
``vertex_error_similarity_mm``, ... — see ``pipeline.evaluate``).
The table printed at the end gives mean ± std over seeds; the JSON (``--out``) holds every run,
the summary and the ground truth's own smoothness. ``--resume`` skips runs already in ``--out``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "direct_vs_neuface", "Experiment name in experiments/configs/, or a path to a config .py.")
flags.DEFINE_list("seeds", None, "Override the config's seeds.")
flags.DEFINE_list("settings", None, "Run only these settings (names).")
flags.DEFINE_list("methods", None, "Run only these methods (names).")
flags.DEFINE_integer("num_frames", None, "Override the clip length.")
flags.DEFINE_integer("num_epochs", None, "Override the number of epochs.")
flags.DEFINE_string("pretrained", None, "Override the pretrained encoder: 'packaged' or a checkpoint directory.")
flags.DEFINE_string("out", None, "JSON output (default experiments/results/<config>.json).")
flags.DEFINE_bool("resume", False, "Skip (seed, setting, method) runs already present in --out.")
flags.DEFINE_bool("markdown", False, "Also print the tables as markdown (for docs/experiments.md).")
flags.DEFINE_bool("report_only", False, "Run nothing: print the tables of the existing --out JSON.")
flags.DEFINE_string("paired", None, "Also print each method's paired differences (per seed) from this reference method "
                    "and whether its mean is within the reference's seed spread.")
flags.DEFINE_string("compile_cache", "/tmp/neuface_jax_compile_cache", "JAX persistent compilation cache ('' = off).")

METRICS = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm", "vertex_error_mm")
#: Metrics where lower is better (the rest, MSI, higher), for counting wins per seed.
LOWER_IS_BETTER = ("nme_percent", "jitter_mm", "cvd_mm", "vertex_error_mm", "accel_error_mm",
                   "vertex_error_aligned_mm", "vertex_error_similarity_mm")
EXTRA_METRICS = (
    "accel_error_mm", "vertex_error_aligned_mm", "vertex_error_similarity_mm", "jitter_detected_mm",
    "msi_vertices_detected",
)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# --------------------------------------------------------------------------- configs
def load_config(name: str) -> dict[str, Any]:
    """``get_config()`` of ``experiments/configs/<name>.py`` (or of the file ``name``)."""
    path = Path(name)
    if path.suffix != ".py":
        path = CONFIG_DIR / f"{name}.py"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise FileNotFoundError(f"no experiment config {name!r} (known: {', '.join(known)})")
    spec = importlib.util.spec_from_file_location(f"experiment_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = dict(module.get_config())
    cfg.setdefault("name", path.stem)
    return normalize_config(cfg)


def normalize_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fills defaults and checks a config dict (raises ValueError naming the problem)."""
    cfg = dict(cfg)
    cfg.setdefault("description", "")
    cfg.setdefault("seeds", [0])
    cfg.setdefault("num_frames", 40)
    cfg.setdefault("num_epochs", 100)
    cfg.setdefault("fit", {})
    cfg.setdefault("pretrained", "packaged")
    cfg.setdefault("settings", [{"name": "3view", "views": "3"}])
    cfg.setdefault("images_for_undetected_frames", True)
    if not cfg.get("methods"):
        raise ValueError(f"config {cfg['name']!r} has no methods")
    settings, methods = [], []
    for s in cfg["settings"]:
        s = dict(s)
        if "name" not in s or "views" not in s:
            raise ValueError(f"config {cfg['name']!r}: a setting needs 'name' and 'views', got {s}")
        s.setdefault("noise", 1.0)
        s.setdefault("drop", 0.0)
        s.setdefault("realism", {})
        s.setdefault("withhold_shape", 0)
        s.setdefault("contour", "dynamic")
        if s["contour"] not in ("dynamic", "static"):
            raise ValueError(f"config {cfg['name']!r}: contour must be 'dynamic' or 'static', got {s}")
        settings.append(s)
    for m in cfg["methods"]:
        m = dict(m)
        if m.get("method") not in ("neuface", "direct"):
            raise ValueError(f"config {cfg['name']!r}: method must be 'neuface' or 'direct', got {m}")
        m.setdefault("name", m["method"])
        m.setdefault("init", "random")
        if m["init"] not in ("random", "pretrained"):
            raise ValueError(f"config {cfg['name']!r}: init must be 'random' or 'pretrained', got {m}")
        m.setdefault("fit", {})
        m.setdefault("needs_views", 1)
        m.setdefault("only_settings", None)
        m.setdefault("family", m["method"])
        methods.append(m)
    for kind, items in (("setting", settings), ("method", methods)):
        names = [i["name"] for i in items]
        if len(set(names)) != len(names):
            raise ValueError(f"config {cfg['name']!r}: duplicate {kind} names {names}")
    cfg["settings"], cfg["methods"] = settings, methods
    cfg["seeds"] = [int(s) for s in cfg["seeds"]]
    return cfg


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):
        return x.item()
    return repr(x)


# --------------------------------------------------------------------------- running
def run_experiment(
    cfg: dict[str, Any],
    *,
    previous: list[dict[str, Any]] | None = None,
    previous_ground_truth: dict[str, dict[str, dict[str, float]]] | None = None,
    on_run=None,
    log=print,
) -> dict[str, Any]:
    """Runs every (seed, setting, method) of a normalized config; returns the results dict."""
    arch = cfg.get("pretrained_arch")
    if arch and (cfg["pretrained"] == "packaged" or not Path(cfg["pretrained"]).expanduser().is_dir()):
        raise ValueError(f"config {cfg['name']!r}: no {arch} prior at {cfg['pretrained']!r} "
                         "(make one with `neuface-jax pretrain --arch ...` and pass --pretrained=DIR)")
    import flame_jax
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.synthetic import motion as motion_lib
    from neuface_jax.synthetic import demo as pipeline
    from neuface_jax.synthetic import synth as synth_lib

    model, embedding = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, embedding)
    random_cfg = pipeline.default_encoder_config(model)
    if cfg.get("encoder"):
        random_cfg = dataclasses.replace(random_cfg, **cfg["encoder"])
    pretrained = None
    if any(m["init"] == "pretrained" for m in cfg["methods"]):
        from neuface_jax.synthetic import pretrain

        path = None if cfg["pretrained"] == "packaged" else cfg["pretrained"]
        enc, enc_cfg, summary = pretrain.ensure_pretrained(path, log=log)
        if arch and enc_cfg.arch != arch:
            raise ValueError(f"config {cfg['name']!r}: the prior at {path} is {enc_cfg.arch!r}, not {arch!r}")
        pretrained = (enc, enc_cfg, summary)
    done = {(r["seed"], r["setting"], r["method"]): r for r in (previous or [])}
    runs: list[dict[str, Any]] = list(previous or [])
    # {setting: {seed: the ground truth's own smoothness}}
    ground_truth: dict[str, dict[str, dict[str, float]]] = {k: dict(v) for k, v in (previous_ground_truth or {}).items()}

    for seed in cfg["seeds"]:
        for setting in cfg["settings"]:
            if setting.get("seeds") is not None and seed not in setting["seeds"]:
                continue
            views = motion_lib.parse_rig(setting["views"]).num_views
            todo = [
                m for m in cfg["methods"]
                if (seed, setting["name"], m["name"]) not in done and views >= m["needs_views"]
                and (m["only_settings"] is None or setting["name"] in m["only_settings"])
            ]
            num_frames = int(setting.get("num_frames", cfg["num_frames"]))
            synth_cfg = dataclasses.replace(
                synth_lib.SynthConfig().scaled_noise(float(setting["noise"])),
                num_frames=num_frames, drop_frame_probability=float(setting["drop"]),
                realism=realism_config(setting),
            )
            if not todo:
                continue
            face, generator = setting_assets(setting, model, embedding)
            t0 = time.perf_counter()
            clip = synth_lib.synthesize_clip(seed=seed, rig=setting["views"], config=synth_cfg, **generator)
            t_synth = time.perf_counter() - t0
            ground_truth.setdefault(setting["name"], {})[str(seed)] = pipeline.ground_truth_reference(clip, face)
            prepared = {}
            for m in todo:
                enc, enc_cfg = (None, random_cfg) if m["init"] == "random" else pretrained[:2]
                size = enc_cfg.image_size
                if size not in prepared:
                    prepared[size] = prepare(clip, size, synth_cfg.crop_size, cfg["images_for_undetected_frames"])
                fit_cfg = fit_lib_config(cfg, setting, m["fit"])
                try:
                    fits = pipeline.fit_methods(
                        prepared[size], face, fit_config=fit_cfg, encoder_config=enc_cfg, methods=(m["method"],),
                        encoder=enc,
                    )
                except Exception as e:  # noqa: BLE001 - recorded, the other runs go on
                    log(f"seed {seed} {setting['name']} {m['name']}: FAILED {type(e).__name__}: {e}")
                    runs.append({"seed": seed, "setting": setting["name"], "method": m["name"],
                                 "error": f"{type(e).__name__}: {e}"})
                    if on_run is not None:
                        on_run(runs, ground_truth)
                    continue
                res, secs = fits[m["method"]]
                # The fixed metrics plus the ground-truth ones (acceleration error, similarity-aligned
                # vertex error, smoothness over detected frames): all in pipeline.evaluate.
                metrics = pipeline.evaluate_synthetic(res, face, clip, crop_size=synth_cfg.crop_size)
                final_loss = {k: v[-1] for k, v in res.history.items() if v}
                run = {
                    "seed": seed, "setting": setting["name"], "method": m["name"], "metrics": metrics,
                    "seconds": secs, "synth_seconds": t_synth, "final_loss": final_loss,
                }
                runs.append(run)
                log(
                    f"seed {seed} {setting['name']:<14} {m['name']:<22} {secs:6.1f} s  "
                    + " ".join(f"{k}={metrics.get(k, float('nan')):.4g}" for k in METRICS)
                )
                if on_run is not None:
                    on_run(runs, ground_truth)
    return {"runs": runs, "ground_truth": ground_truth, "pretrained_summary": None if pretrained is None else {
        k: pretrained[2].get(k) for k in ("pretrain_config", "validation", "seconds")}}


def fit_lib_config(cfg: dict[str, Any], setting: dict[str, Any], method_fit: dict[str, Any]):
    """The FitConfig of a run: the config's epochs and ``fit``, then the setting's, then the method's."""
    from neuface_jax.core import fit as fit_lib

    return fit_lib.FitConfig(num_epochs=cfg["num_epochs"]).replace(
        **{**cfg["fit"], **setting.get("fit", {}), **method_fit})


def realism_config(setting: dict[str, Any]):
    """The setting's ``synth.RealismConfig``; MediaPipe's model file from ``landmarker.resolve_model_path``
    or, failing that, ``$NEUFACE_SHARED_DATA/mediapipe/face_landmarker.task``."""
    import os

    from neuface_jax.media import landmarker
    from neuface_jax.synthetic import synth as synth_lib

    over = dict(setting.get("realism") or {})
    if over.get("detector") == "mediapipe" and not over.get("face_landmarker"):
        try:
            over["face_landmarker"] = str(landmarker.resolve_model_path())
        except FileNotFoundError:
            shared = Path(os.environ.get("NEUFACE_SHARED_DATA", "")) / "mediapipe" / "face_landmarker.task"
            if not shared.is_file():
                raise
            over["face_landmarker"] = str(shared)
    return synth_lib.RealismConfig(**over)


def withheld_model(model, count: int):
    """``model`` with its last ``count`` identity components zeroed: identities that use them lie
    outside the fitted model's span (the generator keeps them)."""
    import jax.numpy as jnp

    if count <= 0:
        return model
    if count >= model.num_shape:
        raise ValueError(f"withhold_shape={count}: the model has only {model.num_shape} identity components")
    rows = slice(model.num_shape - count, model.num_shape)
    return dataclasses.replace(
        model, basis=jnp.asarray(model.basis).at[rows].set(0.0),
        joint_basis=jnp.asarray(model.joint_basis).at[rows].set(0.0),
        name=f"{model.name} (last {count} identity components withheld)",
    )


def setting_assets(setting: dict[str, Any], model, embedding):
    """``(FaceModel the methods fit, synthesize_clip keyword arguments)`` of a setting: a static
    contour for both the truth and the fit when ``contour="static"``, withheld identity components."""
    import flame_jax
    from flame_jax import demo as demo_head
    from neuface_jax.annotation.face import static_contour_embedding
    from neuface_jax.core import fit as fit_lib

    generator: dict[str, Any] = {}
    fit_embedding = embedding
    if setting.get("contour", "dynamic") == "static":
        fit_embedding = static_contour_embedding(embedding)
        names = list(demo_head.DEMO_EXPRESSION_NAMES)
        generator = {
            "model": model, "embedding68": fit_embedding, "embedding_mp": flame_jax.demo_mediapipe_embedding(),
            "blink_component": names.index("blink"),
            "speech_components": (names.index("lips_apart"), names.index("pucker")),
        }
    return fit_lib.FaceModel(withheld_model(model, int(setting.get("withhold_shape", 0))), fit_embedding), generator


def prepare(clip, encoder_size: int, crop_size: int, images_for_undetected_frames: bool = True):
    """``crops.prepare_clip`` of a synthetic clip.

    ``prepare_clip`` warps the crop of every frame whose crop box is known, undetected frames
    included (on a real video the frame is there and its box is interpolated from the neighbours, as
    ``synthesize_clip`` does for ``crop_transforms``), so NeuFace can still predict them from pixels;
    only the landmark and frame masks carry the missing detections. ``images_for_undetected_frames=False``
    blacks out the images of masked frames instead (what ``prepare_clip`` did before).
    """
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.media import crops as crops_lib

    data = crops_lib.prepare_clip(
        clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=encoder_size, visible=clip.visible68,
        valid=clip.valid, crop_size=crop_size,
    )
    if images_for_undetected_frames:
        return data
    return fit_lib.ClipData(
        images=data.images * data.frame_mask[..., None, None, None], landmarks=data.landmarks,
        landmarks_mask=data.landmarks_mask, frame_mask=data.frame_mask,
    )


def summarize(cfg: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """{setting: {method: {metric: [mean, std, n]}}} over seeds (in config order)."""
    import numpy as np

    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for s in cfg["settings"]:
        for m in cfg["methods"]:
            sel = [
                r for r in runs
                if r["setting"] == s["name"] and r["method"] == m["name"] and r["seed"] in cfg["seeds"] and "metrics" in r
            ]
            if not sel:
                continue
            keys = list(METRICS) + list(EXTRA_METRICS)
            row = {}
            for k in keys + ["seconds"]:
                if k != "seconds" and not any(k in r["metrics"] for r in sel):
                    continue
                vals = np.array([r["seconds"] if k == "seconds" else r["metrics"].get(k, np.nan) for r in sel], float)
                row[k] = [float(np.mean(vals)), float(np.std(vals)), int(len(vals))]
            out.setdefault(s["name"], {})[m["name"]] = row
    return out


def wins(cfg: dict[str, Any], runs: list[dict[str, Any]], methods=None, metrics=LOWER_IS_BETTER + (
        "msi_vertices",)) -> dict[str, dict[str, dict[str, int]]]:
    """{setting: {method: {metric: seeds where it is the best of ``methods``}}} (ties count for each;
    only seeds where every one of ``methods`` ran)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    names = methods or [m["name"] for m in cfg["methods"]]
    for s in cfg["settings"]:
        by_seed: dict[int, dict[str, dict[str, float]]] = {}
        for r in runs:
            if r["setting"] == s["name"] and r["method"] in names and "metrics" in r and r["seed"] in cfg["seeds"]:
                by_seed.setdefault(r["seed"], {})[r["method"]] = r["metrics"]
        here = [n for n in names if any(n in v for v in by_seed.values())]
        if len(here) < 2:
            continue
        table = {n: {k: 0 for k in metrics} for n in here}
        for vals in by_seed.values():
            if any(n not in vals for n in here):
                continue
            for k in metrics:
                xs = {n: vals[n].get(k) for n in here}
                if any(v is None or v != v for v in xs.values()):
                    continue
                best = (min if k in LOWER_IS_BETTER else max)(xs.values())
                for n, v in xs.items():
                    table[n][k] += int(v == best)
        out[s["name"]] = table
    return out


PAIRED_METRICS = ("vertex_error_mm", "accel_error_mm", "cvd_mm", "nme_percent")


def paired(cfg: dict[str, Any], runs: list[dict[str, Any]], reference: str, metrics=PAIRED_METRICS):
    """{setting: {method: {metric: {diffs, mean_diff, ref_std, within}}}}: per seed, the method's value
    minus ``reference``'s on the same clip (seeds where both ran); ``within``: |mean difference| <= the
    reference's seed spread (std over all its seeds of the setting); ``worse_every_seed``: higher on every
    paired seed."""
    import numpy as np

    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for s in cfg["settings"]:
        by = {(r["seed"], r["method"]): r["metrics"] for r in runs
              if r["setting"] == s["name"] and "metrics" in r and r["seed"] in cfg["seeds"]}
        for m in cfg["methods"]:
            seeds = [sd for sd in cfg["seeds"] if (sd, m["name"]) in by and (sd, reference) in by]
            if m["name"] == reference or not seeds:
                continue
            row = {}
            for k in metrics:
                ref = np.array([by[(sd, reference)].get(k, np.nan) for sd in seeds], float)
                val = np.array([by[(sd, m["name"])].get(k, np.nan) for sd in seeds], float)
                if np.all(np.isnan(ref)) or (k == "cvd_mm" and np.all(ref == 0)):
                    continue
                spread = float(np.std([by[(sd, reference)].get(k, np.nan) for sd in cfg["seeds"]
                                       if (sd, reference) in by]))
                d = val - ref
                row[k] = {"diffs": d.tolist(), "mean_diff": float(d.mean()), "ref_std": spread,
                          "within": bool(abs(d.mean()) <= spread), "worse_every_seed": bool(np.all(d > 0))}
            out.setdefault(s["name"], {})[m["name"]] = row
    return out


def format_paired(table, reference: str) -> str:
    lines = []
    for setting, rows in table.items():
        lines.append(f"\n[{setting}] paired differences from {reference} (mean; per seed; * = outside its seed spread)")
        for method, row in rows.items():
            cells = [f"{k} {v['mean_diff']:+.3f}{'' if v['within'] else '*'} ("
                     + "/".join(f"{x:+.3f}" for x in v["diffs"]) + ")" for k, v in row.items()]
            lines.append(f"  {method:<22} " + "  ".join(cells))
    return "\n".join(lines)


def format_summary(summary: dict[str, dict[str, dict[str, list[float]]]], metrics=METRICS) -> str:
    """Plain-text tables (one per setting): mean ± std over seeds."""
    lines = []
    for setting, rows in summary.items():
        n = max(v["seconds"][2] for v in rows.values())
        lines.append(f"\n[{setting}]  (mean ± std over {n} seed{'s' if n != 1 else ''})")
        metrics_here = [c for c in metrics if any(c in v for v in rows.values())]
        header = f"{'method':<24}" + "".join(f"{c:>20}" for c in metrics_here) + f"{'seconds':>10}"
        lines.append(header)
        lines.append("-" * len(header))
        for method, vals in rows.items():
            cells = "".join(f"{_pm(vals[c]) if c in vals else '':>20}" for c in metrics_here)
            lines.append(f"{method:<24}{cells}{vals['seconds'][0]:>10.1f}")
    return "\n".join(lines)


def format_markdown(summary, ground_truth=None, metrics=METRICS + ("accel_error_mm", "vertex_error_similarity_mm")) -> str:
    """Markdown tables (one per setting) of mean ± std, with the ground truth's own smoothness."""
    out = []
    for setting, rows in summary.items():
        n = max(v["seconds"][2] for v in rows.values())
        cols = [c for c in metrics if any(c in v for v in rows.values())]
        out.append(f"**{setting}** (mean ± std over {n} seed{'s' if n != 1 else ''})\n")
        out.append("| method | " + " | ".join(cols) + " | s/run |")
        out.append("|---" * (len(cols) + 2) + "|")
        for method, vals in rows.items():
            out.append(f"| {method} | " + " | ".join(_pm(vals[c]) if c in vals else "" for c in cols)
                       + f" | {vals['seconds'][0]:.0f} |")
        if ground_truth and setting in ground_truth:
            g = ground_truth[setting]
            out.append("| *ground truth* | " + " | ".join(
                f"*{g[c]:.3f}*" if c in g and c in ("msi_landmarks", "msi_vertices", "jitter_mm") else "" for c in cols) + " | |")
        out.append("")
    return "\n".join(out)


def _pm(v) -> str:
    mean, std = v[0], v[1]
    if mean != mean:
        return "nan"
    if len(v) > 2 and v[2] == 1:  # one seed: no spread to show
        return f"{mean:.1f}" if abs(mean) >= 100 else f"{mean:.3f}"
    if abs(mean) >= 100:
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


def _environment() -> dict[str, Any]:
    import jax

    return {
        "python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "machine": platform.machine(), "node": platform.node(),
    }


def load_previous(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(runs, ground truth per seed)`` already in the results file ``out`` (for ``--resume``)."""
    if not out.is_file():
        return [], {}
    old = json.loads(out.read_text())
    previous = [r for r in old.get("runs", []) if "metrics" in r]
    print(f"resuming: {len(previous)} runs from {out}")
    return previous, old.get("ground_truth_per_seed", {})


def results_writer(cfg: dict[str, Any], out: Path, command: str):
    """``write(runs, ground_truth, final=False, extra=None)``: the results JSON of a run of ``cfg``
    (config, command, environment, summary, every run, the ground truth's smoothness, wall time)."""
    t_start = time.perf_counter()

    def write(runs, ground_truth, final=False, extra=None):
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "config": _jsonable(cfg), "command": command, "complete": final, "environment": _environment(),
            "summary": summarize(cfg, runs), "runs": _jsonable(runs),
            "ground_truth": {
                k: {m: float(sum(d[m] for d in v.values()) / len(v)) for m in next(iter(v.values()))}
                for k, v in ground_truth.items() if v
            },
            "ground_truth_per_seed": ground_truth,
            "wall_seconds": time.perf_counter() - t_start,
        }
        if extra:
            doc.update(_jsonable(extra))
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.replace(out)

    return write


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint read at INFO
    if FLAGS.compile_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", FLAGS.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cfg = load_config(FLAGS.config)
    if FLAGS.seeds:
        cfg["seeds"] = [int(s) for s in FLAGS.seeds]
    if FLAGS.num_frames:
        cfg["num_frames"] = FLAGS.num_frames
    if FLAGS.num_epochs:
        cfg["num_epochs"] = FLAGS.num_epochs
    if FLAGS.pretrained:
        cfg["pretrained"] = FLAGS.pretrained
    if FLAGS.settings:
        cfg["settings"] = [s for s in cfg["settings"] if s["name"] in FLAGS.settings]
    if FLAGS.methods:
        cfg["methods"] = [m for m in cfg["methods"] if m["name"] in FLAGS.methods]
    if not cfg["settings"] or not cfg["methods"]:
        raise app.UsageError("no setting or method left after --settings/--methods")
    out = Path(FLAGS.out) if FLAGS.out else Path(__file__).resolve().parent / "results" / f"{cfg['name']}.json"
    if FLAGS.report_only:
        doc = json.loads(out.read_text())
        # --methods / --settings: the tables of this config's methods (the file's config is its last invocation's)
        shown = cfg if (FLAGS.methods or FLAGS.settings) else normalize_config(doc["config"])
        summary = summarize(shown, doc["runs"])
        print(f"{out}: {doc['command']} ({doc['wall_seconds']:.0f} s)")
        print(format_summary(summary, METRICS + ("accel_error_mm", "vertex_error_similarity_mm")))
        if FLAGS.paired:
            print(format_paired(paired(shown, doc["runs"], FLAGS.paired), FLAGS.paired))
        if FLAGS.markdown:
            print("\n" + format_markdown(summary, doc["ground_truth"]))
        return
    previous, previous_gt = load_previous(out) if FLAGS.resume else ([], {})
    command = "python " + " ".join([sys.argv[0]] + sys.argv[1:])
    t_start = time.perf_counter()
    write = results_writer(cfg, out, command)

    print(f"experiment {cfg['name']}: {cfg['description']}")
    print(f"seeds {cfg['seeds']}, {len(cfg['settings'])} settings × {len(cfg['methods'])} methods")
    result = run_experiment(cfg, previous=previous, previous_ground_truth=previous_gt, on_run=write)
    write(result["runs"], result["ground_truth"], final=True, extra={"pretrained_summary": result["pretrained_summary"]})
    summary = summarize(cfg, result["runs"])
    print(format_summary(summary, METRICS + ("accel_error_mm", "vertex_error_similarity_mm")))
    if FLAGS.paired:
        print(format_paired(paired(cfg, result["runs"], FLAGS.paired), FLAGS.paired))
    if FLAGS.markdown:
        print("\n" + format_markdown(summary, json.loads(out.read_text())["ground_truth"]))
    gt = json.loads(out.read_text())["ground_truth"]
    if gt:
        print("\nground truth's own smoothness: " + "; ".join(
            f"{k}: msi_vertices={v['msi_vertices']:.4g} jitter_mm={v['jitter_mm']:.4g}" for k, v in gt.items()))
    print(f"\nwrote {out} ({time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    app.run(main)
