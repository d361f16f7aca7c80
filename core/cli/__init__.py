"""The ``yolov7-studio`` command line: one sub-command per module in this package.

Each module listed in ``_COMMANDS`` defines ``register(subparsers)``, which adds its parser and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Modules are imported lazily by name so that ``yolov7-studio models`` does not import Gradio.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

from core import __version__

# (module under core.cli, sub-command names it registers); modules are imported when the CLI starts,
# but each keeps its heavy imports inside its command function.
_COMMANDS: list[str] = [
    "models",
    "conformance",
    "demo",
    "data",
    "reparam",
    "detect",
    "export",
    "train",
    "assign",
    "strip",
    "study",
]


def build_parser(extra: list[Callable[[argparse._SubParsersAction], None]] | None = None) -> argparse.ArgumentParser:
    """Build the full parser with every registered sub-command.

    ``extra``: functions that register more sub-commands (the front ends add theirs this way, so that the
    engine's command line knows nothing of them).
    """
    parser = argparse.ArgumentParser(
        prog="yolov7-studio",
        description="YOLOv7 engine and studio: models, data, training, assignment inspection, deploy.",
    )
    parser.add_argument("--version", action="version", version=f"yolov7-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"core.cli.{name}")
        except ImportError as exc:  # one broken command must not take the others down
            _register_broken(sub, name, exc)
            continue
        module.register(sub)
    for register in extra or []:
        register(sub)
    _show_defaults(parser)
    return parser


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default (unless the help text already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or "default" in text.lower()
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return action.help
        return f"{text} (default: %(default)s)".strip()


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give every (sub-)parser the defaults-showing help formatter, unless it chose another one."""
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _show_defaults(child)


def _register_broken(sub: argparse._SubParsersAction, name: str, exc: ImportError) -> None:
    def fail(_args: argparse.Namespace) -> int:
        print(f"error: the '{name}' command is unavailable: {exc}", file=sys.stderr)
        return 2

    p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=fail)


def main(argv: list[str] | None = None, extra: list[Callable[[argparse._SubParsersAction], None]] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
