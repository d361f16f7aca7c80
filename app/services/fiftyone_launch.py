"""The studio's and dashboard's "Open in FiftyOne": ``yolov7-studio fiftyone ... --launch`` in the background.

One process per FiftyOne dataset name, tracked in ``<workspace>/tmp/fiftyone/apps.json`` (pid, port, URL, the
command's inputs) with its output in ``<workspace>/tmp/fiftyone/<name>.log``: a second click with the same dataset,
split and checkpoints reuses the running App; other inputs for the same name stop it and start a new one (the
command updates the FiftyOne dataset in place). :func:`open_app` waits until the command prints the App's URL
(127.0.0.1) and reports the log's last lines when it fails. FiftyOne itself is never imported here (the studio and
dashboard processes stay free of it and its MongoDB): :func:`available` only looks for the package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.jobs import tail
from app.workspace import Workspace, safe_name

INSTALL_HINT = (
    "FiftyOne is not installed in this environment: `pip install -e .[fiftyone]` (FiftyOne, its brain and its "
    "MongoDB) adds the **Open in FiftyOne** action."
)
URL_PREFIX = "FiftyOne App: "
DEFAULT_TIMEOUT_S = 900.0  # the first build of a dataset runs every checkpoint over it and starts MongoDB
LOG_TAIL_LINES = 15
_lock = threading.Lock()

Progress = Callable[[float, str], None]


class LaunchError(RuntimeError):
    """The App could not be opened; the message says why (with the command's last log lines)."""


def available() -> bool:
    """Whether the ``fiftyone`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("fiftyone") is not None
    except (ImportError, ValueError):
        return False


def dataset_name(dataset_id: str) -> str:
    """The stable FiftyOne dataset name of a studio dataset id (``demo`` -> ``studio-demo``)."""
    return "studio-" + safe_name(str(dataset_id).replace(":", "-"), "dataset")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dir(ws: Workspace) -> Path:
    d = ws.tmp_dir / "fiftyone"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _state_file(ws: Workspace) -> Path:
    return _dir(ws) / "apps.json"


def _read(ws: Workspace) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(_state_file(ws).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write(ws: Workspace, apps: dict[str, dict[str, Any]]) -> None:
    path = _state_file(ws)
    fd, tmp = tempfile.mkstemp(prefix=".apps.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(apps, f, indent=1)
    os.replace(tmp, path)


def _alive(entry: dict[str, Any]) -> bool:
    """The recorded process still runs and is our command (a reused pid is not)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and "fiftyone" in cmdline and str(entry.get("name", "")) in cmdline


def command(data: str | Path, weights: Sequence[str | Path], split: str | None, name: str, port: int) -> list[str]:
    """``yolov7-studio fiftyone --data ... --weights ... --split ... --name ... --launch --port ...``."""
    exe = Path(sys.executable).with_name("yolov7-studio")
    base = [str(exe)] if exe.is_file() else [sys.executable, "-m", "app.cli"]
    cmd = [*base, "fiftyone", "--data", str(data), "--weights", *map(str, weights), "--name", name]
    if split and split != "all":
        cmd += ["--split", split]
    return [*cmd, "--launch", "--port", str(port)]


def _url_in(log: Path) -> str | None:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(URL_PREFIX):
            url = line[len(URL_PREFIX) :].split()[0]
            if re.match(r"^http://127\.0\.0\.1:\d+/", url):
                return url
    return None


def status(ws: Workspace, name: str | None = None) -> list[dict[str, Any]]:
    """The tracked Apps (all, or the one of ``name``) with ``alive`` and, for a live one, its ``url``."""
    apps = _read(ws)
    out = []
    for key, entry in sorted(apps.items()):
        if name is not None and key != name:
            continue
        alive = _alive(entry)
        out.append({**entry, "alive": alive, "url": entry.get("url") if alive else None})
    return out


def open_app(
    ws: Workspace,
    data: str | Path,
    weights: Sequence[str | Path],
    *,
    name: str,
    split: str | None = None,
    port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The running App of dataset ``name`` for these inputs (reused, or started and waited for).

    Returns {name, url, pid, port, log, reused, seconds}. Raises :class:`LaunchError` with the command's last log
    lines when the command fails or prints no URL within ``timeout`` seconds (the process is then ended).
    """
    if not available():
        raise LaunchError(INSTALL_HINT)
    weights = [str(Path(w).resolve()) for w in weights]
    if not weights:
        raise LaunchError("no checkpoint: pick at least one to open its predictions in FiftyOne")
    name = safe_name(name, "dataset")
    inputs = {"data": str(Path(data).resolve()), "weights": weights, "split": split or "all"}
    report = progress or (lambda _f, _m: None)
    with _lock:
        apps = _read(ws)
        old = apps.get(name)
        if old and _alive(old):
            if old.get("inputs") == inputs and old.get("url"):
                report(1.0, f"FiftyOne App for {name} already running")
                return {**_public(old), "reused": True, "seconds": 0.0}
            _terminate(old)  # the same dataset name with other inputs: rebuild it
        port = int(port or free_port())
        log = _dir(ws) / f"{name}.log"
        cmd = command(inputs["data"], weights, split, name, port)
        run_env = {**os.environ, "FIFTYONE_DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=run_env,
                cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True,
            )  # fmt: skip
        entry = {"name": name, "pid": proc.pid, "port": port, "log": str(log), "inputs": inputs, "url": None,
                 "started": time.time(), "command": cmd}  # fmt: skip
        apps[name] = entry
        _write(ws, apps)
    t0 = time.monotonic()
    while True:
        url = _url_in(log)
        if url:
            break
        code = proc.poll()
        if code is not None:
            _forget(ws, name, proc.pid)
            raise LaunchError(
                f"`yolov7-studio fiftyone` for {name} ended with exit code {code} before the App opened. "
                f"Last lines of {log}:\n{tail(log, LOG_TAIL_LINES)}"
            )
        waited = time.monotonic() - t0
        if waited > timeout:
            _terminate(entry)
            _forget(ws, name, proc.pid)
            raise LaunchError(
                f"the FiftyOne App for {name} did not open within {timeout:.0f} s (stopped). "
                f"Last lines of {log}:\n{tail(log, LOG_TAIL_LINES)}"
            )
        last = tail(log, 1).strip()
        report(min(0.95, waited / max(timeout, 1.0) * 4), f"building the FiftyOne dataset {name}: {last[-120:]}")
        time.sleep(0.5)
    with _lock:
        apps = _read(ws)
        if name in apps and apps[name].get("pid") == proc.pid:
            apps[name]["url"] = url
            _write(ws, apps)
        entry["url"] = url
    report(1.0, f"FiftyOne App: {url}")
    return {**_public(entry), "reused": False, "seconds": round(time.monotonic() - t0, 1)}


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry.get(k) for k in ("name", "url", "pid", "port", "log")}


def _forget(ws: Workspace, name: str, pid: int) -> None:
    with _lock:
        apps = _read(ws)
        if apps.get(name, {}).get("pid") == pid:
            del apps[name]
            _write(ws, apps)


def _terminate(entry: dict[str, Any], wait_s: float = 20.0) -> bool:
    """End the command: SIGINT first (it closes the App and its services cleanly), then SIGTERM, then SIGKILL."""
    if not _alive(entry):
        return False
    pid = int(entry["pid"])
    for sig, wait in ((signal.SIGINT, wait_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (else it lingers as a zombie)
            if not _alive(entry):
                return True
            time.sleep(0.2)
    return not _alive(entry)


def stop_app(ws: Workspace, name: str | None = None) -> list[str]:
    """End the App of ``name`` (None: every tracked App); returns the names that were running."""
    stopped = []
    with _lock:
        apps = _read(ws)
        for key in [k for k in apps if name is None or k == name]:
            if _terminate(apps[key]):
                stopped.append(key)
            del apps[key]
        _write(ws, apps)
    return stopped


def open_from_workspace(
    ws: Workspace,
    dataset: str | None,
    checkpoints: Sequence[str] | str | None,
    split: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`open_app` for studio ids: a dataset id (``demo``, ``upload:x``, ``folder:x``) and checkpoint ids."""
    from app.workspace import WorkspaceError

    ids = [c.strip() for c in (checkpoints.split(",") if isinstance(checkpoints, str) else checkpoints or [])]
    ids = [c for c in dict.fromkeys(ids) if c]
    if not ids:
        raise LaunchError("no checkpoint: pick at least one to open its predictions in FiftyOne")
    try:
        entry = ws.dataset(dataset)
        weights = [ws.checkpoint(c).path for c in ids]
    except WorkspaceError as exc:
        raise LaunchError(str(exc)) from None
    return open_app(ws, entry.path, weights, name=dataset_name(entry.id), split=split, **kwargs)


def describe(result: dict[str, Any]) -> str:
    """One line of HTML for the front ends: the App's link, and whether it was reused."""
    import html

    url = html.escape(str(result.get("url") or ""))
    how = "already running" if result.get("reused") else f"opened in {result.get('seconds', 0):.0f} s"
    return (
        f"FiftyOne App for <code>{result.get('name')}</code> ({how}, pid {result.get('pid')}): "
        f'<a href="{url}" target="_blank" rel="noopener">{url}</a>'
    )
