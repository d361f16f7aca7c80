"""The predictor: images in, detections in original pixels out.

>>> predictor = Predictor("runs/train/best.pt")                 # ours or an official .pt; CUDA when present
>>> [dets] = predictor("photo.jpg")                             # also folders, PIL images, RGB arrays, lists
>>> dets.boxes, dets.scores, dets.labels, dets.names            # xyxy original pixels, obj*cls, class ids/names

Pipeline (official detect.py semantics): letterbox (``auto=True``: pad to a multiple of the largest stride only;
colour 114, ``INTER_LINEAR``) -> RGB ``/255`` -> fused deploy network -> NMS (:mod:`core.nms`, official
semantics on ``torchvision.ops``) -> boxes mapped back to original pixels and clipped. Images whose letterboxed
shapes are equal are run together in batches of ``batch_size``; the result does not depend on the batching.

The network runs in PyTorch or, with ``backend=``, in ONNX Runtime or OpenVINO on the CPU
(:mod:`core.inference.backends`); letterbox and NMS are the same for every backend.

Safe to share between threads (e.g. the request threads of a web server): a call changes no state of the predictor
or of the process; its timing comes back with its result (:attr:`Predictions.timing`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.checkpoint.io import load_model
from core.device import select_device
from core.inference.backends import (
    BACKEND_LABELS,
    CPU_PREFERENCE,
    RUNNERS,
    BackendError,
    Runner,
    build_runner,
    resolve_backend,
)
from core.inference.deploy import ReparamCheck, convert_for_deploy, source_form
from core.inference.letterbox import LetterboxInfo, letterbox, letterbox_geometry
from core.inference.results import Detections
from core.inference.sources import InputImage, Source, load_inputs
from core.models.yolo import Yolo
from core.nms import NmsConfig, apply_nms

Precision = Literal["auto", "fp32", "bf16", "fp16"]
log = logging.getLogger(__name__)


class Predictions(list[Detections]):
    """The result of one :class:`Predictor` call: a list of :class:`Detections` (one per image, in input order)
    with that call's ``timing``: ``preprocess_ms``, ``inference_ms``, ``nms_ms`` (summed over batches) and
    ``images``, and the ``backend`` that ran the network (``torch``, ``onnxruntime`` or ``openvino``)."""

    def __init__(
        self, detections: Iterable[Detections] = (), timing: dict[str, float] | None = None, backend: str = "torch"
    ) -> None:
        super().__init__(detections)
        self.timing: dict[str, float] = dict(timing or {})
        self.backend = backend


def _denormals_flushed() -> bool:
    """Whether the calling thread flushes denormal floats to zero (its floating-point control register)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)) == 0.0


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Flush denormal floats to zero in the calling thread for the duration of the block, then restore its setting.

    The setting is a per-thread CPU register: other threads (e.g. other requests of a server) are not affected.
    Threads that PyTorch's intra-op pool starts inside the block inherit it (as they would after a global call).
    """
    if not enabled:
        yield
        return
    before = _denormals_flushed()
    if not before:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not before:
            torch.set_flush_denormal(False)


class Predictor:
    """Detection with a YOLOv7 model from a checkpoint path or a :class:`Yolo`.

    Args:
        model: a checkpoint path (ours or official, see :func:`core.checkpoint.io.load_model`) or a model.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:N"`` (:func:`core.device.select_device`).
        img_size: long side of the network input (rounded up to a multiple of the largest stride).
        rect: pad only to a multiple of the stride (detect.py, ``auto=True``); ``False``: square ``img_size``.
        nms: default NMS settings (detect.py's: conf 0.25, IoU 0.45, best class, max 300 detections).
        precision: ``"auto"`` = fp16 on CUDA, fp32 on CPU; ``"bf16"`` runs the network under bfloat16 autocast
            (about 2x faster on CPUs with AVX-512 BF16 / AMX, boxes move by a fraction of a pixel) and decodes in
            float32.
        deploy: convert to the fused deploy form (:func:`core.inference.deploy.convert_for_deploy`); with
            ``check`` the conversion is verified on a probe input and the original model is kept (with a
            warning) if it fails. The report is in :attr:`deploy_check`.
        channels_last: NHWC memory layout (faster oneDNN convolutions on CPU, tensor cores on GPU).
        flush_denormal: flush denormal floats to zero while a call runs on the CPU (in the calling thread only,
            restored afterwards; denormal activations can make CPU convolutions 10x slower and change no
            detection).
        backend: where the network runs: ``"torch"``; ``"onnxruntime"`` or ``"openvino"`` (CPU, fp32: the deploy
            form exported to ONNX once, cached in ``cache_dir`` per weights hash and size, verified against
            PyTorch when built); ``"auto"``: PyTorch on CUDA, else the fastest installed CPU runtime, falling back
            (with the reason logged and kept in :attr:`backend_notes`) to PyTorch. The one chosen is
            :attr:`backend` and each call's ``Predictions.backend``.
        cache_dir: export cache (default ``$YOLOV7_STUDIO_CACHE`` or ``~/.cache/yolov7-studio``).
        threads: CPU threads of the ONNX Runtime / OpenVINO backend (default: the runtime's choice).

    One predictor can serve several threads at once: calls share only read-only state (the model in eval mode,
    the settings). Each call returns :class:`Predictions` carrying its own ``timing``; :attr:`timing` is the
    timing of the calling thread's last call (kept for older callers).
    """

    def __init__(
        self,
        model: Yolo | str | Path,
        *,
        device: str | torch.device = "auto",
        img_size: int = 640,
        rect: bool = True,
        nms: NmsConfig | None = None,
        precision: Precision = "auto",
        deploy: bool = True,
        check: bool = True,
        channels_last: bool = True,
        batch_size: int = 8,
        flush_denormal: bool = True,
        backend: str = "torch",
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        requested = (backend or "torch").strip().lower()
        if requested in ("onnxruntime", "openvino") and str(device) == "auto":
            device = "cpu"  # the runtimes run on the CPU
        self.device = select_device(device)
        self.backend, self.backend_notes = resolve_backend(requested, self.device)
        if isinstance(model, (str, Path)):
            loaded = load_model(model)
            model, self.description = loaded.model, loaded.summary()
        else:
            self.description = f"{model.spec.name} {source_form(model)}"
        if next(model.parameters()).device != self.device:
            model = copy.deepcopy(model).to(self.device)  # the caller's model is never moved or changed
        self.deploy_check: ReparamCheck | None = None
        conversion = convert_for_deploy(model, check=check) if deploy else None
        if conversion is not None and conversion.check is not None and not conversion.check.passed:
            warnings.warn(
                "deploy conversion failed its self-check; running the original model instead:\n"
                + conversion.check.to_text(),
                RuntimeWarning,
                stacklevel=2,
            )
        if conversion is not None:
            self.deploy_check = conversion.check
        if conversion is not None and (conversion.check is None or conversion.check.passed):
            model = conversion.model
        else:
            model = copy.deepcopy(model).eval()
        self.precision = self._resolve_precision(precision)
        if self.precision == "fp16":
            model = model.half()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.flush_denormal = bool(flush_denormal) and self.device.type == "cpu"
        self.model: Yolo = model
        self.names: list[str] = list(model.names)
        self.stride = int(model.stride.max())
        self.img_size = -(-int(img_size) // self.stride) * self.stride
        self.rect = rect
        self.nms = nms or NmsConfig()
        self.batch_size = max(1, int(batch_size))
        self._runner: Runner | None = None
        self._threads = threads
        self.export_path: Path | None = None
        if self.backend != "torch":
            self._start_runtime(requested, cache_dir, threads)
        self._last = threading.local()

    def _start_runtime(self, requested: str, cache_dir: str | Path | None, threads: int | None) -> None:
        """Build the runner of :attr:`backend`; under ``auto`` a failing runtime gives way to the next one."""
        if self.precision != "fp32":
            raise ValueError(f"backend {self.backend!r} runs fp32 only (precision {self.precision!r})")
        candidates = [self.backend]
        if requested == "auto":
            candidates = [b for b in CPU_PREFERENCE[CPU_PREFERENCE.index(self.backend) :]]
        for name in candidates:
            if name == "torch":
                break
            try:
                self._runner, self.export_path = build_runner(
                    name, self.model, self.img_size, directory=cache_dir, threads=threads
                )
                self.backend = name
                return
            except BackendError as exc:
                if requested != "auto":
                    raise
                self.backend_notes.append(str(exc))
        self.backend = "torch"
        log.warning("backend auto: running PyTorch (%s)", "; ".join(self.backend_notes) or "no runtime")

    @property
    def timing(self) -> dict[str, float]:
        """Timing of the calling thread's last call (``{}`` before one); prefer ``Predictions.timing``."""
        return dict(getattr(self._last, "timing", {}))

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles (e.g. a UI's per-session state) leave out the per-thread last timings and the
        runtime session, which is opened again from the cached graph."""
        state = self.__dict__.copy()
        del state["_last"]
        state["_runner"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._last = threading.local()
        if self.backend != "torch" and self.export_path is not None:
            self._runner = RUNNERS[self.backend](self.export_path, threads=self._threads)

    def _resolve_precision(self, precision: Precision) -> str:
        if precision == "auto":
            return "fp16" if self.device.type == "cuda" else "fp32"
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'fp32' or 'bf16'")
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision {precision!r}: use 'auto', 'fp32', 'bf16' or 'fp16'")
        return precision

    # -- steps -------------------------------------------------------------------------------------------------
    def geometry(self, shape: tuple[int, int]) -> LetterboxInfo:
        """Letterbox geometry of an image of ``shape`` (h, w) under this predictor's settings."""
        return letterbox_geometry(shape, self.img_size, auto=self.rect, stride=self.stride)

    def preprocess(self, images: Sequence[InputImage]) -> tuple[torch.Tensor, list[LetterboxInfo]]:
        """Letterbox images of one letterboxed shape into a ``[B, 3, H, W]`` float batch in [0, 1] (RGB)."""
        boxed = [letterbox(im.array, self.img_size, auto=self.rect, stride=self.stride) for im in images]
        shapes = {info.shape for _, info in boxed}
        if len(shapes) != 1:
            raise ValueError(f"preprocess needs images of one letterboxed shape, got {sorted(shapes)}")
        nhwc = torch.from_numpy(np.stack([arr for arr, _ in boxed])).to(self.device, non_blocking=True)
        x = nhwc.permute(0, 3, 1, 2)  # a channels_last view: no copy
        x = x.half() if self.precision == "fp16" else x.float()
        return x.div_(255.0), [info for _, info in boxed]

    @property
    def backend_label(self) -> str:
        """The backend in words, e.g. ``ONNX Runtime (CPU)`` or ``PyTorch cpu fp32``."""
        if self.backend == "torch":
            return f"PyTorch {self.device} {self.precision}"
        return f"{BACKEND_LABELS[self.backend]} (CPU)"

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Network forward of a ``[B, 3, H, W]`` batch: decoded ``[B, N, 5+nc]`` float32 (xywh input pixels)."""
        if self._runner is not None:
            return torch.from_numpy(self._runner(np.ascontiguousarray(x.float().cpu().numpy())))
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                raw = self.model.forward_levels(x, aux=False)
        else:
            raw = self.model.forward_levels(x, aux=False)
        return self.model.head.decode([r.float() for r in raw])

    def postprocess(
        self, pred: torch.Tensor, images: Sequence[InputImage], infos: Sequence[LetterboxInfo], nms: NmsConfig
    ) -> list[Detections]:
        """NMS on the decoded batch, then boxes back to original pixels (clipped)."""
        out = []
        for det, im, info in zip(apply_nms(pred, nms), images, infos):
            det = det.float().cpu()
            out.append(
                Detections(
                    boxes=info.to_original(det[:, :4]),
                    scores=det[:, 4].clone(),
                    labels=det[:, 5].long(),
                    class_names=list(self.names),  # the caller's to change
                    image_size=im.shape,
                    source=im.name,
                )
            )
        return out

    # -- main entry --------------------------------------------------------------------------------------------
    def __call__(
        self,
        inputs: Source | Iterable[Source] | np.ndarray,
        *,
        conf: float | None = None,
        iou: float | None = None,
        classes: Sequence[int] | None = None,
        agnostic: bool | None = None,
        multi_label: bool | None = None,
        max_det: int | None = None,
    ) -> Predictions:
        """Detections for every input image, in input order (one :class:`Detections` per image).

        ``inputs``: paths, folders, glob patterns, PIL images, ``[H, W, 3]`` RGB uint8 arrays, a ``[B, H, W, 3]``
        array, or a list of these (:func:`core.inference.sources.load_inputs`). Keyword arguments override the
        predictor's NMS settings for this call. The returned list also holds this call's ``timing``.
        """
        cfg = self.nms_config(
            conf=conf, iou=iou, classes=classes, agnostic=agnostic, multi_label=multi_label, max_det=max_det
        )
        images = load_inputs(inputs)
        groups: dict[tuple[int, int], list[int]] = {}
        for k, im in enumerate(images):
            groups.setdefault(self.geometry(im.shape).shape, []).append(k)
        results: list[Detections | None] = [None] * len(images)
        timing = {"preprocess_ms": 0.0, "inference_ms": 0.0, "nms_ms": 0.0, "images": float(len(images))}
        with flush_denormals(self.flush_denormal):
            self._run(images, groups, cfg, results, timing)
        self._last.timing = timing
        return Predictions((r for r in results if r is not None), timing, self.backend)

    def _run(
        self,
        images: list[InputImage],
        groups: dict[tuple[int, int], list[int]],
        cfg: NmsConfig,
        results: list[Detections | None],
        timing: dict[str, float],
    ) -> None:
        """Run every group in batches, writing into ``results`` and adding to ``timing``."""
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = [images[k] for k in chunk]
                t0 = time.perf_counter()
                x, infos = self.preprocess(batch)
                t1 = time.perf_counter()
                pred = self.infer(x)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t2 = time.perf_counter()
                for k, det in zip(chunk, self.postprocess(pred, batch, infos, cfg)):
                    results[k] = det
                t3 = time.perf_counter()
                timing["preprocess_ms"] += 1000 * (t1 - t0)
                timing["inference_ms"] += 1000 * (t2 - t1)
                timing["nms_ms"] += 1000 * (t3 - t2)

    def nms_config(self, **overrides: Any) -> NmsConfig:
        """This predictor's NMS settings with the non-``None`` ``overrides`` applied."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "classes" in changes:
            changes["classes"] = tuple(int(c) for c in changes["classes"])
        return dataclasses.replace(self.nms, **changes)
