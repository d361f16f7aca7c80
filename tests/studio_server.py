"""Start the studio for tests: as a real ``yolov7-studio studio`` process, on a free port, with its own workspace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's Chromium (never a downloaded browser)
CHROMIUM_ARGS = [  # headless as root on a machine without network (see ../shared/notes/ENVIRONMENT.md)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("STUDIO_SCREENSHOTS", REPO / "runs" / "screenshots"))
ENDPOINTS = (
    "/detect", "/assign", "/check_data", "/start_training", "/training_status", "/stop_training", "/compare",
    "/annotation_load", "/annotation_save", "/prelabel", "/review_queue", "/open_study", "/open_in_fiftyone",
    "/stop_fiftyone",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses (dotted) with a socket in LISTEN state on ``port``, from /proc/net/tcp."""
    found: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@contextmanager
def studio_process(workspace: Path, *extra: str, timeout: float = 240.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``yolov7-studio studio --workspace W --port P``; yields (the URL it printed, the process)."""
    port = free_port()
    exe = Path(sys.executable).with_name("yolov7-studio")
    log = workspace.parent / f"studio_{port}.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "studio", "--workspace", str(workspace), "--port", str(port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        deadline, url = time.time() + timeout, None
        while time.time() < deadline and url is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the studio exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            for line in log.read_text().splitlines():
                if line.startswith("yolov7-studio studio: http"):
                    url = line.split()[2]
            time.sleep(0.2)
        if url is None:
            raise TimeoutError(f"the studio did not print its URL within {timeout} s:\n{log.read_text()[-3000:]}")
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.status == 200
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
