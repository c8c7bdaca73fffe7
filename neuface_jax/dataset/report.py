"""The dataset quality report: ``report.json`` and ``report.md`` over everything in an output folder.

It reads only the records (completion records, failures, shard summaries), so it can be written at
the end of a run, or later over the output of many shards (``neuface-jax report``).
"""

from __future__ import annotations

import collections
import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np

from neuface_jax.common.atomic import atomic_write_text
from neuface_jax.dataset import records

_SHARD_KEYS = ("shard_id", "num_shards", "done", "failed", "skipped_done", "seconds", "clips_per_hour", "groups")


def distribution(values: Sequence[float | None]) -> dict[str, Any]:
    """Count, mean, spread, percentiles and a histogram of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"count": 0}
    qs = np.percentile(v, [5, 25, 50, 75, 95])
    counts, edges = np.histogram(v, bins=min(10, max(1, v.size)))
    return {
        "count": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
        "p5": float(qs[0]), "p25": float(qs[1]), "median": float(qs[2]), "p75": float(qs[3]), "p95": float(qs[4]),
        "max": float(v.max()), "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
    }


def worst_by(completed: Sequence[Mapping[str, Any]], metric: str, count: int) -> list[dict[str, Any]]:
    """The ``count`` clips with the largest finite ``metric``."""
    rows = [(r["metrics"][metric], r["clip_id"]) for r in completed
            if r.get("metrics", {}).get(metric) is not None and np.isfinite(r["metrics"][metric])]
    rows.sort(reverse=True)
    return [{"clip_id": c, metric: float(v)} for v, c in rows[:count]]


def report_doc(out_dir, completed, failures: Mapping[str, Mapping[str, Any]], summaries, *,
               worst: int = 10) -> dict[str, Any]:
    """The report's content from the records (pure)."""
    by_reason = collections.Counter(f"{r.get('stage')}: {r.get('error')} ({r.get('class', records.PERMANENT)})"
                                    for r in failures.values())
    return {
        "out_dir": str(out_dir),
        "completed": len(completed),
        "failed": len(failures),
        "frames": sum(int(r.get("num_frames") or 0) for r in completed),
        "metrics": {m: distribution([r.get("metrics", {}).get(m) for r in completed]) for m in records.RECORD_METRICS},
        "worst_nme": worst_by(completed, "nme_percent", worst),
        "worst_jitter": worst_by(completed, "jitter_mm", worst),
        "failures_by_reason": dict(by_reason.most_common()),
        "failures": [{"clip_id": c, "stage": r.get("stage"), "error": r.get("error"),
                      "class": r.get("class", records.PERMANENT), "message": r.get("message")}
                     for c, r in failures.items()][:100],
        "shards": [{k: s.get(k) for k in _SHARD_KEYS} for s in summaries],
        "generated_at": time.time(),
    }


def write_report(out_dir, *, worst: int = 10) -> dict[str, Any]:
    """The dataset quality report over every completed clip in ``out_dir``: ``report.json`` and
    ``report.md`` (distributions of NME, jitter, MSI and CVD; the worst clips by NME and by jitter;
    failures by stage and error; throughput of the shard summaries)."""
    out = pathlib.Path(out_dir)
    doc = report_doc(out, records.completed_clips(out), records.failed_clips(out), records.read_summaries(out),
                     worst=worst)
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1, default=records.json_default) + "\n")
    atomic_write_text(out / "report.md", report_markdown(doc))
    return doc


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["| metric | count | mean | median | p5 | p95 | max |", "|---|---|---|---|---|---|---|"]
    any_clip = any(d.get("count") for d in metrics.values())
    for m, d in metrics.items():
        if m == "cvd_mm" and any_clip and not d.get("count"):  # a cross-view metric; every clip has one view
            lines.append(f"| {m} | 0 | n/a (one view) | | | | |")
        elif d.get("count"):
            lines.append(f"| {m} | {d['count']} | {d['mean']:.4g} | {d['median']:.4g} | {d['p5']:.4g} | "
                         f"{d['p95']:.4g} | {d['max']:.4g} |")
        else:
            lines.append(f"| {m} | 0 | | | | | |")
    return lines


def _failures_section(doc: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Failures", ""]
    if not doc["failures_by_reason"]:
        return lines + ["None."]
    lines += ["| stage: error (class) | clips |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in doc["failures_by_reason"].items()]
    return lines + [""] + [f"- `{f['clip_id']}` ({f['stage']}): {str(f['message'])[:200]}" for f in doc["failures"]]


def _shards_section(shards: Sequence[Mapping[str, Any]]) -> list[str]:
    if not shards:
        return []
    lines = ["", "## Shards", "", "| shard | done | failed | skipped (done) | seconds | clips/hour |",
             "|---|---|---|---|---|---|"]
    for s in shards:
        cph = s.get("clips_per_hour")
        lines.append(
            f"| {s.get('shard_id')}/{s.get('num_shards')} | {s.get('done')} | {s.get('failed')} | "
            f"{s.get('skipped_done')} | {float(s.get('seconds') or 0):.1f} | "
            f"{'' if cph is None else f'{float(cph):.0f}'} |"
        )
    return lines


def report_markdown(doc: Mapping[str, Any]) -> str:
    """``report.md`` from the report document."""
    lines = [
        "# Dataset annotation report", "",
        f"Output: `{doc['out_dir']}`. Completed clips: **{doc['completed']}** ({doc['frames']} frames); "
        f"failed: **{doc['failed']}**.", "",
        "## Metrics over completed clips", "",
    ]
    lines += _metrics_table(doc["metrics"])
    for title, key, metric in (("Worst clips by NME", "worst_nme", "nme_percent"),
                               ("Worst clips by jitter", "worst_jitter", "jitter_mm")):
        lines += ["", f"## {title}", "", f"| clip | {metric} |", "|---|---|"]
        lines += [f"| `{r['clip_id']}` | {r[metric]:.4g} |" for r in doc[key]]
    lines += _failures_section(doc)
    lines += _shards_section(doc["shards"])
    return "\n".join(lines) + "\n"
