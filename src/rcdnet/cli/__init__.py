"""Command-line tool: ``rcdnet <subcommand>`` (``rcdnet --help`` lists them; each is registered once, in
:mod:`rcdnet.cli.parser`). Each subcommand parses its arguments, calls one library function and prints the result."""

from __future__ import annotations

import sys

from rcdnet import runtime
from rcdnet.cli.parser import build_parser


def parse(argv: list[str]):
    """The arguments; a subcommand that takes any number of files also takes its options among them
    (``explain RUN --out D a.png b.png`` as well as ``explain RUN a.png --out D``)."""
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in parser.subcommands or not parser.subcommands[command].get_default("intermixed"):
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
        return args.handler(args)
    except KeyboardInterrupt:
        print("rcdnet: interrupted (checkpoints written so far are kept; --resume continues)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: e.g. a disk that filled up or went read-only
        print(f"rcdnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
