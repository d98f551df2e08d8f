"""The ``anatcl`` command: one entry point, one sub-command per task.

    anatcl validate PATH...          check files, OpenBHB roots or manifests against the CAT12-VBM contract
    anatcl synthesize --out DIR      write the embedded synthetic cohort (params.yaml ``synth:``)
    anatcl embed INPUT... --weights F --out F.csv   frozen encoder features, one row per subject
    anatcl weights list|fetch|verify                 known checkpoints (upstream and ours)
    anatcl compare RUN_A RUN_B       are two runs' checkpoints, probes, metrics and tables bit-identical?
    anatcl export brainfmbench RUN --out DIR      a trained encoder as a BrainFMBench submission folder
    anatcl check brainfmbench DIR    a BrainFMBench submission against the contract, in a fresh venv

Sub-commands import their module only when chosen, so ``anatcl --help`` stays fast. Ctrl-C
(SIGINT) and SIGTERM stop a command with one line on stderr and status 130 / 143; every temp
file is removed on the way out (:mod:`anatcl_core.atomic`). An error a command did not report
itself is one line too, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from collections.abc import Sequence


def _validate(argv: Sequence[str]) -> int:
    from anatcl_core.data import validate

    return validate.main(list(argv))


def _synthesize(argv: Sequence[str]) -> int:
    from anatcl_core.synth.__main__ import main as synth_main

    return synth_main(list(argv))


def _embed(argv: Sequence[str]) -> int:
    from anatcl_core.evaluation import embed

    return embed.main(list(argv))


def _weights(argv: Sequence[str]) -> int:
    from anatcl_core.model import weights

    return weights.main(list(argv))


def _compare(argv: Sequence[str]) -> int:
    from anatcl_core.cli import compare

    return compare.main(list(argv))


def _brainfmbench(command: str, module: str, argv: Sequence[str]) -> int:
    """``anatcl export|check brainfmbench ...``: the one target so far."""
    import importlib

    if not argv or argv[0] != "brainfmbench":
        sys.stderr.write(f"usage: anatcl {command} brainfmbench ... (the one target)\n")
        return 2
    return importlib.import_module(module).main(list(argv[1:]))


def _export(argv: Sequence[str]) -> int:
    return _brainfmbench("export", "anatcl_core.export.brainfmbench", argv)


def _check(argv: Sequence[str]) -> int:
    return _brainfmbench("check", "anatcl_core.export.check", argv)


COMMANDS = {
    "validate": (_validate, "check images, ROI tables, OpenBHB roots or manifests"),
    "synthesize": (_synthesize, "write the embedded synthetic cohort"),
    "embed": (_embed, "frozen AnatCL features per subject (CSV or Parquet)"),
    "weights": (_weights, "list, fetch or verify known checkpoints"),
    "compare": (_compare, "compare two runs' results entry by entry (bit for bit)"),
    "export": (_export, "export brainfmbench RUN --out DIR: a BrainFMBench submission"),
    "check": (_check, "check brainfmbench DIR: the submission contract, fresh venv, offline"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``anatcl <command> [args...]``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="anatcl",
        description="AnatCL compendium tools.",
        epilog="\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), help="see the list below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command (try: anatcl COMMAND --help)")
    if not argv:
        parser.print_help()
        return 2
    ns = parser.parse_args(argv[:1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handler, _ = COMMANDS[ns.command]
    from anatcl_core.atomic import Terminated, exit_on_signals

    exit_on_signals()
    try:
        return handler(argv[1:])
    except KeyboardInterrupt as err:
        signal_name = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
        sys.stderr.write(f"anatcl {ns.command}: interrupted ({signal_name}); no output was left half-written\n")
        return 143 if isinstance(err, Terminated) else 130
    except (ValueError, OSError, KeyError, pickle.UnpicklingError) as err:
        sys.stderr.write(f"anatcl {ns.command}: error: {' '.join(str(err).split())}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
