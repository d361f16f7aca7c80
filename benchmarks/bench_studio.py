"""The studio as a user meets it: start-up time, the front end's overhead on /detect, and memory.

Usage::

    python benchmarks/bench_studio.py                 # 3 start-ups, 20 /detect calls, on the demo checkpoint
    python benchmarks/bench_studio.py --starts 5 --calls 40 --json out.json

* **start-up**: wall time from spawning ``yolov7-studio studio`` (a fresh process, a fresh workspace: the demo dataset
  is generated) to the page answering HTTP 200, and to the API answering its first ``/detect``.
* **/detect overhead**: the same image through ``gradio_client`` (``/detect``, deploy form, demo checkpoint) and
  through a direct :class:`core.inference.Predictor` call in this process, interleaved call by call so that a busy
  neighbour slows both alike; min and median of each, and their difference (upload, queue, JSON, drawing).
* **memory**: the studio process's resident set (RSS, from /proc) idle after start-up, and its peak (VmHWM) after
  the /detect calls.

Every figure names the CPU it came from (:func:`core.device.cpu_description`) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.device import cpu_description  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def proc_memory(pid: int) -> dict[str, float]:
    """RSS and peak RSS (VmHWM) in MB of ``pid`` and its children (summed RSS; peak of the main process)."""
    out = {"rss_mb": 0.0, "peak_mb": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_mb"] = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            out["peak_mb"] = int(line.split()[1]) / 1024
    return out


def start_studio(workspace: Path, port: int) -> tuple[subprocess.Popen, float, float]:
    exe = Path(sys.executable).with_name("yolov7-studio")
    cmd = [str(exe), "studio", "--workspace", str(workspace), "--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/")
    t_page = time.perf_counter() - t0
    return proc, t0, t_page


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from gradio_client import Client, handle_file

    from app.workspace import DEMO_CHECKPOINT
    from core.inference import Predictor

    result: dict[str, object] = {"cpu": cpu_description(), "load_before": os.getloadavg()}
    page_times, first_detect_times = [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench_studio_"))
    proc = None
    for i in range(args.starts):
        port = free_port()
        proc, t0, t_page = start_studio(tmp / f"ws{i}", port)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        image = sorted((tmp / f"ws{i}" / "datasets" / "demo" / "images" / "test").glob("*"))[0]
        client.predict(handle_file(str(image)), api_name="/detect")
        first_detect_times.append(time.perf_counter() - t0)
        page_times.append(t_page)
        if i < args.starts - 1:
            proc.terminate()
            proc.wait(30)
    assert proc is not None
    time.sleep(2.0)
    idle = proc_memory(proc.pid)
    result["startup_page_s"] = stats(page_times)
    result["startup_first_detect_s"] = stats(first_detect_times)

    predictor = Predictor(DEMO_CHECKPOINT, img_size=320)
    api_ms, direct_ms = [], []
    for _ in range(args.calls):
        t = time.perf_counter()
        client.predict(handle_file(str(image)), api_name="/detect")
        api_ms.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        predictor([str(image)], conf=0.25, iou=0.45)
        direct_ms.append((time.perf_counter() - t) * 1e3)
    result["detect_api_ms"] = stats(api_ms)
    result["detect_direct_ms"] = stats(direct_ms)
    result["detect_overhead_ms_median"] = statistics.median(api_ms) - statistics.median(direct_ms)
    result["memory_idle"] = idle
    result["memory_after_detect"] = proc_memory(proc.pid)
    result["load_after"] = os.getloadavg()
    proc.terminate()
    proc.wait(30)

    print(f"CPU: {result['cpu']}; load average before {result['load_before']}, after {result['load_after']}")
    sp, sd = result["startup_page_s"], result["startup_first_detect_s"]
    print(f"start-up to page (s):        min {sp['min']:.1f}  median {sp['median']:.1f}  max {sp['max']:.1f}")  # type: ignore[index]
    print(f"start-up to first /detect (s): min {sd['min']:.1f}  median {sd['median']:.1f}  max {sd['max']:.1f}")  # type: ignore[index]
    for key in ("detect_api_ms", "detect_direct_ms"):
        s = result[key]
        print(f"{key:<18} min {s['min']:.1f}  median {s['median']:.1f}  max {s['max']:.1f} ms ({s['n']} calls)")  # type: ignore[index]
    print(f"front-end overhead (median difference): {result['detect_overhead_ms_median']:.1f} ms")
    print(
        f"studio memory: idle RSS {idle['rss_mb']:.0f} MB; after /detect RSS "
        f"{result['memory_after_detect']['rss_mb']:.0f} MB, peak {result['memory_after_detect']['peak_mb']:.0f} MB"
    )  # type: ignore[index]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
