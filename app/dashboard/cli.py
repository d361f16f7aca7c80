"""``yolov7-studio dashboard``: serve the Streamlit dashboard (``streamlit run app/dashboard/app.py``), print the URL.

Streamlit is imported by the child process only, so registering the command costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.workspace import DEFAULT_ROOT, REPO_ROOT

APP = Path(__file__).resolve().parent / "app.py"


def register_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="open the Streamlit dashboard (datasets, live runs, comparisons, assignment statistics, launch)",
        description="Serve the Streamlit dashboard on the workspace's datasets and runs (and any --runs folders). "
        "Binds 127.0.0.1 unless --host says otherwise; prints the URL.",
    )
    p.add_argument("--workspace", default=str(DEFAULT_ROOT), help="the studio's workspace (default runs/studio)")
    p.add_argument(
        "--runs", nargs="+", action="extend", default=[], metavar="DIR",
        help="more run folders to show: a run folder, or a folder of runs (repeatable)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=run_dashboard)


def command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for these arguments."""
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", args.host, "--server.port",
        str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal",
        "--", "--workspace", str(Path(args.workspace).resolve()),
    ]  # fmt: skip
    if args.runs:
        cmd += ["--runs", *(str(Path(r).resolve()) for r in args.runs)]
    return cmd


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Whether the server answers its health check before ``timeout`` (False at once if the process ended)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            if r.status == 200:
                return True
        time.sleep(0.5)
    return False


def run_dashboard(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    url = f"http://{host}:{args.port}"
    proc = subprocess.Popen(command(args), cwd=REPO_ROOT, env=env)
    try:
        if wait_ready(url, proc):
            print(f"yolov7-studio dashboard: {url}  (workspace {args.workspace}; Ctrl-C to stop)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        return 0
