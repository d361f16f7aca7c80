"""The ``yolov7-studio`` console script: the engine's commands (``core.cli``) plus the front ends'.

``studio`` serves the Gradio studio. Front-end commands import their UI library only when they run, so
``yolov7-studio models`` stays quick and works without Gradio installed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from core.cli import main as core_main


def _auth(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASS")
    return user, password


def register_studio(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="open the Gradio studio (detect, assignments, data, fine-tune, compare) on the built-in demo",
        description="Serve the Gradio studio. Binds 127.0.0.1 unless --host says otherwise; prints the URL.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--workspace", default="runs/studio", help="datasets, checkpoints and runs (default runs/studio)")
    p.add_argument("--auth", type=_auth, default=None, metavar="USER:PASS", help="ask for this login")
    p.add_argument(
        "--allow",
        action="append",
        default=None,
        metavar="DIR",
        help="folder under which datasets may be linked by path (repeatable; default: the current directory)",
    )
    p.set_defaults(func=_run_studio)


def _run_studio(args: argparse.Namespace) -> int:
    import logging

    from app.studio.app import launch

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):  # one line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo = launch(args.workspace, host=args.host, port=args.port, auth=args.auth, allowed_roots=args.allow, block=False)
    print(f"yolov7-studio studio: {demo.local_url}  (workspace {args.workspace}; Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        demo.block_thread()
    return 0


def register_fiftyone(sub: argparse._SubParsersAction) -> None:
    from app.fiftyone_bridge import register_fiftyone as register  # FiftyOne itself is imported when the command runs

    register(sub)


def register_dashboard(sub: argparse._SubParsersAction) -> None:
    from app.dashboard.cli import register_dashboard as register  # Streamlit itself runs in a child process

    register(sub)


FRONT_ENDS = [register_studio, register_fiftyone, register_dashboard]


def main(argv: list[str] | None = None) -> int:
    return core_main(argv, extra=FRONT_ENDS)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
