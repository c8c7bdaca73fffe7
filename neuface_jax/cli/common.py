"""What every command shares: absl flag parsing and --help."""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags


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


def parse_command(argv: list[str], prog: str, doc: str, define: Callable[[flags.FlagValues], None]) -> flags.FlagValues:
    """A command's flags: defined by ``define``, ``--help`` answered (with ``doc``), ``argv`` parsed."""
    fv = flags.FlagValues()
    define(fv)
    help_requested(argv, fv, prog, doc)
    parse(fv, argv, prog)
    return fv


def missing(fv: flags.FlagValues, prog: str, *names: str) -> bool:
    """True (and says so on stderr) when a required flag is not set."""
    if all(fv[n].value for n in names):
        return False
    listed = " and ".join(f"--{n}" for n in names)
    sys.stderr.write(f"{prog}: {listed} {'is' if len(names) == 1 else 'are'} required (see --help)\n")
    return True
