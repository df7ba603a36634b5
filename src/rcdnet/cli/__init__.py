"""Command-line tool: ``rcdnet audit | train | cv | benchmark | evaluate | robustness | explain | predict | export |
serve | site-validate``. Each subcommand parses its arguments, calls one library function and prints the result."""

from __future__ import annotations

import sys

from rcdnet import runtime
from rcdnet.cli import commands
from rcdnet.cli.parser import build_parser
from rcdnet.cli.site import cmd_site_validate

INTERMIXED = {"explain", "predict"}  # subcommands with a variable number of input files
HANDLERS = {"audit": commands.cmd_audit, "train": commands.cmd_train, "cv": commands.cmd_cv,
            "benchmark": commands.cmd_benchmark, "evaluate": commands.cmd_evaluate,
            "robustness": commands.cmd_robustness, "explain": commands.cmd_explain, "predict": commands.cmd_predict,
            "export": commands.cmd_export, "serve": commands.cmd_serve, "site-validate": cmd_site_validate}


def parse(argv: list[str]):
    """The arguments; a subcommand that takes any number of files also takes its options among them
    (``explain RUN --out D a.png b.png`` as well as ``explain RUN a.png --out D``)."""
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in INTERMIXED:
        return parser.parse_args(argv)
    args = parser.subcommands[command].parse_intermixed_args(argv[argv.index(command) + 1:])
    args.command = command
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    args.argv = argv
    try:
        runtime.apply()
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print("rcdnet: interrupted (checkpoints written so far are kept; --resume continues)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: e.g. a disk that filled up or went read-only
        print(f"rcdnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
