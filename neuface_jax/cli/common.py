"""What every command shares: absl flag parsing, --help, progress bars."""

from __future__ import annotations

import sys

from absl import flags


def progress_factory():
    from tqdm.auto import tqdm

    def make(desc, total):
        # disable=None: bars on a terminal, silent in logs and CI.
        return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, disable=None, mininterval=0.5)

    return make


def parse(fv: flags.FlagValues, argv: list[str], prog: str) -> None:
    try:
        fv(argv)
    except flags.Error as e:
        sys.stderr.write(f"{prog}: {e}\n\n{fv.main_module_help() if hasattr(fv, 'main_module_help') else ''}\n")
        raise SystemExit(2)


def help_requested(argv, fv, prog, doc):
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(doc.strip() + "\n")
        print(fv.get_help())
        raise SystemExit(0)

