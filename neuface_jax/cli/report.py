"""neuface-jax report: the quality report of an annotate-dataset output folder."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from neuface_jax import dataset
from neuface_jax.cli.common import help_requested, parse


def report_main(argv: list[str]) -> int:
    """The dataset quality report of an annotate-dataset output folder: report.json and report.md.

    neuface-jax report --out DIR
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "annotate-dataset output root.", flag_values=fv)
    flags.DEFINE_integer("worst", 10, "Worst clips listed per metric.", flag_values=fv)
    help_requested(argv, fv, "neuface-jax report", report_main.__doc__)
    parse(fv, argv, "neuface-jax report")
    if not fv.out or not Path(fv.out).is_dir():
        sys.stderr.write(f"neuface-jax report: --out must be an existing annotate-dataset folder, got {fv.out!r}\n")
        return 2
    doc = dataset.write_report(fv.out, worst=fv.worst)
    print((Path(fv.out) / "report.md").read_text())
    print(f"wrote {Path(fv.out).resolve()}/report.{{json,md}} ({doc['completed']} clips, {doc['failed']} failed)")
    return 0

