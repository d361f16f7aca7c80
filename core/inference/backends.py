"""Where the network of a :class:`core.inference.Predictor` runs: PyTorch, ONNX Runtime or OpenVINO (CPU).

>>> Predictor("best.pt", backend="auto")        # CUDA torch when present, else the fastest installed CPU runtime

The runtimes run the fused deploy form exported to ONNX (:func:`core.export.export_onnx`, dynamic batch, height
and width, decoded ``[B, N, 5+nc]`` output, no NMS); the predictor keeps its letterbox and the official NMS
around it, so every backend returns the same :class:`Detections`. The exported graph is cached per content hash
of the weights, input size and batch in :func:`cache_dir` (``$YOLOV7_STUDIO_CACHE``, else
``~/.cache/yolov7-studio``): a changed checkpoint has a new key, so a stale graph is never used. Each runtime is
checked against PyTorch on probe inputs once, when it first meets a cached graph; the result is stored beside it.

``auto`` order on a CPU: ONNX Runtime, then OpenVINO, then PyTorch; a runtime that is not installed (or whose
graph fails its check) is skipped with the reason logged. ``benchmarks/bench_backends.py`` (yolov7-tiny deploy,
batch 1, 2 threads) put both runtimes 1.3-1.6x ahead of PyTorch on a quiet 2-core AVX2 EPYC (issue 17) and 4-10x
ahead under a concurrent training load on the project's shared 2-core AVX-512 BF16 EPYC, where the two were within
noise of each other; ONNX Runtime comes first because it is the one the ``export`` extra already installs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.models.yolo import Yolo

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino")
CPU_PREFERENCE = ("onnxruntime", "openvino", "torch")  # fastest first on the benchmark's CPU
BACKEND_LABELS = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
EXPORT_VERSION = 1  # bump when the exported graph changes for the same weights (invalidates every cache entry)
_RUNTIME_MODULES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
_BUILD_LOCK = threading.Lock()


class BackendError(RuntimeError):
    """A backend cannot be used; the message says which and why (e.g. the extra to install)."""


def cache_dir(path: str | Path | None = None) -> Path:
    """The export cache: ``path``, else ``$YOLOV7_STUDIO_CACHE``, else ``~/.cache/yolov7-studio``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("YOLOV7_STUDIO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "yolov7-studio"


def missing_runtime(backend: str) -> str | None:
    """Why ``backend`` cannot run here (a module that does not import), or ``None`` when it can."""
    for module in _RUNTIME_MODULES.get(backend, ()):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            extra = "openvino" if module == "openvino" else "export"
            return f"{module} is not installed ({exc}); pip install 'yolov7-studio[{extra}]'"
    return None


def resolve_backend(backend: str, device: torch.device) -> tuple[str, list[str]]:
    """(backend to use, reasons for every candidate skipped) for a requested name on ``device``.

    ``auto``: PyTorch on CUDA; on a CPU the first installed of :data:`CPU_PREFERENCE`. An explicitly requested
    runtime that is missing is a :class:`BackendError`.
    """
    backend = (backend or "torch").strip().lower()
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"unknown backend {backend!r}: use auto, {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type != "cpu":
            return "torch", []
        skipped: list[str] = []
        for name in CPU_PREFERENCE:
            why = None if name == "torch" else missing_runtime(name)
            if why is None and name != "torch":
                return name, skipped
            if why is not None:
                skipped.append(f"{name}: {why}")
        log.warning("backend auto: running PyTorch (%s)", "; ".join(skipped))
        return "torch", skipped
    if backend != "torch":
        if device.type != "cpu":
            raise BackendError(f"backend {backend!r} runs on the CPU; use device='cpu' (got {device})")
        why = missing_runtime(backend)
        if why is not None:
            raise BackendError(f"backend {backend!r} is not available: {why}")
    return backend, []


def weights_digest(model: Yolo) -> str:
    """SHA-256 of everything the exported graph depends on: weights and buffers, classes, variant, form."""
    h = hashlib.sha256()
    h.update(json.dumps([model.spec.name, list(model.names), bool(getattr(model, "deploy", False))]).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(model: Yolo, img_size: int, batch: int | str = "dynamic", opset: int | None = None) -> str:
    """The cache key of ``model``'s export at ``img_size`` and ``batch``: changes whenever the content does."""
    from core.export import DEFAULT_OPSET

    major_minor = ".".join(torch.__version__.split(".")[:2])
    parts = [weights_digest(model), img_size, batch, opset or DEFAULT_OPSET, EXPORT_VERSION, major_minor]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


@dataclass
class CachedExport:
    """An exported ONNX graph in the cache and its sidecar record (``<stem>.json``: key, checks per runtime)."""

    path: Path
    key: str

    @property
    def record_path(self) -> Path:
        return self.path.with_suffix(".json")

    def record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and data.get("key") == self.key else {}

    def write_record(self, data: dict[str, Any]) -> None:
        tmp = self.record_path.with_name(f".{self.record_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**data, "key": self.key}, indent=1))
        os.replace(tmp, self.record_path)


def cached_export(model: Yolo, img_size: int, *, directory: str | Path | None = None) -> CachedExport:
    """The verified-on-build ONNX export of ``model`` (dynamic batch/height/width) at ``img_size``, made once.

    The file is written atomically (temp file, then rename) and only after ONNX Runtime or OpenVINO agree with
    PyTorch is it used; a file whose sidecar does not carry its key (a stale or foreign file) is rebuilt.
    """
    from core.export import export_onnx

    key = cache_key(model, img_size)
    folder = cache_dir(directory) / "onnx"
    entry = CachedExport(folder / f"{model.spec.name}_{img_size}_dynamic_{key}.onnx", key)
    with _BUILD_LOCK:
        if entry.path.is_file() and entry.record():
            return entry
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".export.", suffix=".onnx", dir=folder)
        os.close(fd)
        try:
            export_onnx(model, tmp, img_size=img_size, dynamic=True)
            os.replace(tmp, entry.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        entry.write_record({"model": model.spec.name, "img_size": img_size, "batch": "dynamic", "checks": {}})
        log.info("exported %s at %d px to %s", model.spec.name, img_size, entry.path)
    return entry


# -- runtimes ----------------------------------------------------------------------------------------------------
class OnnxRuntimeRunner:
    """Decoded predictions from an ONNX file in ONNX Runtime (CPU); safe to call from several threads."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from core.export import onnx_session

        self.path = Path(path)
        self.session = onnx_session(self.path, threads=threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``[B, 3, H, W]`` float32 -> ``[B, N, 5+nc]`` float32."""
        return self.session.run(None, {"images": x})[0]


class OpenVinoRunner:
    """Decoded predictions from an ONNX file compiled by OpenVINO for the CPU (one infer request per thread)."""

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import openvino as ov

        self.path = Path(path)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # not bf16
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self._local = threading.local()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``[B, 3, H, W]`` float32 -> ``[B, N, 5+nc]`` float32."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("an OpenVINO runner cannot be copied or pickled; build a new Predictor")


Runner = Callable[[np.ndarray], np.ndarray]
RUNNERS: dict[str, Callable[..., Any]] = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}


def probe_inputs(img_size: int, stride: int) -> list[torch.Tensor]:
    """A square and a rectangular probe batch (the letterbox gives both) for the build-time check."""
    from core.inference.probe import probe_image

    short = max(stride, -(-img_size // 2 // stride) * stride)
    return [probe_image((img_size, img_size), 1, seed=0), probe_image((short, img_size), 2, seed=1)]


def check_runner(run: Runner, model: Yolo, img_size: int) -> Any:
    """Compare ``run`` with the PyTorch deploy form on :func:`probe_inputs` (an :class:`core.export.OnnxCheck`)."""
    from core.export import verify_onnx

    inputs = probe_inputs(img_size, int(model.stride.max()))
    return verify_onnx(None, model, inputs=inputs, run=run)


def build_runner(
    backend: str, model: Yolo, img_size: int, *, directory: str | Path | None = None, threads: int | None = None
) -> tuple[Runner, Path]:
    """A verified runner of ``backend`` for ``model`` at ``img_size`` and the cached graph it runs.

    Raises :class:`BackendError` when the runtime is missing, the export fails or the graph fails its check.
    """
    why = missing_runtime(backend)
    if why is not None:
        raise BackendError(f"backend {backend!r} is not available: {why}")
    try:
        entry = cached_export(model, img_size, directory=directory)
        runner = RUNNERS[backend](entry.path, threads=threads)
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"{backend}: export or load failed ({type(exc).__name__}: {exc})") from exc
    record = entry.record()
    checks = record.setdefault("checks", {})
    if backend not in checks:
        check = check_runner(runner, model, img_size)
        checks[backend] = {"passed": bool(check.passed), "text": check.to_text().replace("onnxruntime", backend)}
        with _BUILD_LOCK:
            entry.write_record(record)
        log.info("%s check: %s", backend, checks[backend]["text"])
    if not checks[backend]["passed"]:
        text = checks[backend]["text"]
        raise BackendError(f"{backend}: the exported graph {entry.path.name} failed its check: {text}")
    return runner, entry.path


class RuntimeNetwork(torch.nn.Module):
    """A runner as a module: ``[B, 3, H, W]`` float in [0, 1] -> decoded ``[B, N, 5+nc]`` float32 (CPU tensors),
    for code that takes a network, e.g. :func:`core.eval.evaluate`."""

    def __init__(self, runner: Runner, backend: str, stride: int) -> None:
        super().__init__()
        self.runner, self.backend, self.stride = runner, backend, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(np.ascontiguousarray(x.detach().float().cpu().numpy())))


def backend_network(
    model: Yolo,
    backend: str,
    device: torch.device,
    img_size: int,
    *,
    directory: str | Path | None = None,
    threads: int | None = None,
) -> tuple[torch.nn.Module, str, list[str]]:
    """(network, backend used, notes) for evaluation: ``model`` itself for PyTorch, else a :class:`RuntimeNetwork`.

    ``auto`` falls back like the predictor (notes say why); the runtimes need a model whose largest stride is 32
    (the evaluator pads batches to multiples of 32).
    """
    from core.inference.deploy import convert_for_deploy

    requested = (backend or "torch").strip().lower()
    chosen, notes = resolve_backend(requested, torch.device("cpu") if requested in _RUNTIME_MODULES else device)
    if chosen == "torch":
        return model, chosen, notes
    if int(model.stride.max()) != 32:
        why = f"the evaluator pads to multiples of 32, this model's largest stride is {int(model.stride.max())}"
        if requested != "auto":
            raise BackendError(f"backend {chosen!r} for evaluation: {why}")
        return model, "torch", [*notes, why]
    deploy = convert_for_deploy(model, check=False).model.float().cpu().eval()
    order = [chosen] if requested != "auto" else list(CPU_PREFERENCE[CPU_PREFERENCE.index(chosen) :])
    for name in order:
        if name == "torch":
            break
        try:
            runner, _ = build_runner(name, deploy, img_size, directory=directory, threads=threads)
            return RuntimeNetwork(runner, name, 32), name, notes
        except BackendError as exc:
            if requested != "auto":
                raise
            notes.append(str(exc))
    log.warning("backend auto: evaluating with PyTorch (%s)", "; ".join(notes))
    return model, "torch", notes
