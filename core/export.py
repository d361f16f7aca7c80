"""ONNX export of the fused deploy form, optionally with NMS inside the graph, verified with ONNX Runtime.

Outputs of the exported graph (input ``images``: ``[B, 3, H, W]`` float32 RGB in [0, 1], letterboxed):

* without NMS: ``output`` ``[B, N, 5 + nc]``, the decoded predictions (xywh in input pixels, obj, class probs);
* with NMS: ``num_dets`` ``[B]`` int64 and ``detections`` ``[B, max_det, 6]`` = (x1, y1, x2, y2, score, class)
  in input pixels, sorted by descending score, rows past ``num_dets`` zero. Fixed-size outputs work with any
  batch size and in every runtime.

The embedded NMS has the official semantics (:mod:`core.nms`): score = obj * cls (obj for one class), kept when
``> conf``; best class or every class above ``conf`` (multi-label); class filter; boxes offset by class * 4096 so
that one ONNX ``NonMaxSuppression`` handles all classes, exactly like the official single ``torchvision`` call;
at most ``max_nms`` candidates (by score) and ``max_det`` results per image.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import nms as tv_nms

from core.inference.deploy import convert_for_deploy
from core.inference.probe import probe_image
from core.models.yolo import Yolo
from core.nms import MAX_WH, NmsConfig, apply_nms

DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """Export or its verification failed; the message says what."""


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (one class, xyxy boxes); the eager forward gives the same selection."""

    @staticmethod
    def forward(ctx: Any, boxes: torch.Tensor, scores: torch.Tensor, max_out: int, iou: float, thr: float) -> Any:  # noqa: ARG004
        """``boxes`` [B, R, 4], ``scores`` [B, 1, R] -> selected ``[K, 3]`` int64 rows (batch, 0, row)."""
        picks = []
        for b in range(boxes.shape[0]):
            rows = (scores[b, 0] > thr).nonzero().view(-1)
            keep = rows[tv_nms(boxes[b, rows], scores[b, 0, rows], iou)[:max_out]]
            sel = torch.zeros((keep.numel(), 3), dtype=torch.int64, device=boxes.device)
            sel[:, 0], sel[:, 2] = b, keep
            picks.append(sel)
        return torch.cat(picks, 0)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_out: int, iou: float, thr: float) -> Any:
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([thr], dtype=torch.float32)),
            center_point_box_i=0,
        )


class EmbeddedNms(nn.Module):
    """Decoded predictions ``[B, N, 5+nc]`` -> ``num_dets`` [B], ``detections`` [B, max_det, 6] (see module doc).

    ``cap_candidates``: apply the official ``max_nms`` cap (needed only when more than ``max_nms`` candidates
    are possible: multi-label, large inputs, or dynamic shapes).
    """

    def __init__(self, nc: int, cfg: NmsConfig, cap_candidates: bool) -> None:
        super().__init__()
        self.nc, self.cfg, self.cap = nc, cfg, cap_candidates
        mask = torch.ones(nc)
        if cfg.classes is not None:
            mask = torch.zeros(nc)
            mask[[c for c in cfg.classes if 0 <= c < nc]] = 1
        self.class_mask: torch.Tensor
        self.register_buffer("class_mask", mask, persistent=False)

    def forward(self, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, b = self.cfg, pred.shape[0]
        xy, half = pred[..., 0:2], pred[..., 2:4] / 2
        boxes = torch.cat((xy - half, xy + half), -1)  # [B, N, 4] xyxy, as torchvision's box_convert
        obj = pred[..., 4:5]
        scores = pred[..., 5:] * obj if self.nc > 1 else obj  # [B, N, C]
        if cfg.multi_label:
            scores = scores * self.class_mask.to(scores.dtype)
            labels = torch.arange(self.nc, device=pred.device, dtype=pred.dtype).expand_as(scores)
            rows_box = boxes.unsqueeze(2).expand(-1, -1, self.nc, -1).reshape(b, -1, 4)  # rows (box i, class j)
            rows_score, rows_cls = scores.reshape(b, -1), labels.reshape(b, -1)
        else:
            best, label = scores.max(-1)  # [B, N]
            rows_cls = label.to(pred.dtype)
            rows_score = best * self.class_mask.to(best.dtype)[label]
            rows_box = boxes
        dropped = torch.full_like(rows_score, -1.0)  # below every threshold, also conf = 0
        rows_score = torch.where(rows_score > cfg.conf, rows_score, dropped)
        if self.cap:  # official: at most max_nms candidates, the best by score
            padded = torch.cat((rows_score, rows_score.new_full((b, cfg.max_nms), -1.0)), 1)
            top = padded.topk(cfg.max_nms, 1).indices
            keep = torch.zeros_like(padded).scatter(1, top, 1.0)[:, : rows_score.shape[1]]
            rows_score = torch.where(keep > 0, rows_score, dropped)
        offset = rows_cls.unsqueeze(-1) * (0.0 if cfg.agnostic else float(MAX_WH))
        sel = _NonMaxSuppression.apply(rows_box + offset, rows_score.unsqueeze(1), cfg.max_det, cfg.iou, cfg.conf)
        r = rows_score.shape[1]
        kept = torch.zeros(b * r, dtype=pred.dtype, device=pred.device)
        kept = kept.scatter(0, sel[:, 0] * r + sel[:, 2], torch.ones_like(sel[:, 0], dtype=pred.dtype))
        final = torch.where(kept.view(b, r) > 0, rows_score, dropped)
        final = torch.cat((final, final.new_full((b, cfg.max_det), -1.0)), 1)  # so that top-k always has k entries
        vals, idx = final.topk(cfg.max_det, 1)
        valid = vals > -0.5
        idx = idx.clamp(max=r - 1)
        box = torch.gather(rows_box, 1, idx.unsqueeze(-1).expand(-1, -1, 4))
        cls = torch.gather(rows_cls, 1, idx)
        dets = torch.cat((box, vals.unsqueeze(-1), cls.unsqueeze(-1)), -1) * valid.unsqueeze(-1).to(pred.dtype)
        return valid.to(torch.int64).sum(1), dets


class ExportModel(nn.Module):
    """The deploy network, plus :class:`EmbeddedNms` when ``nms`` is given."""

    def __init__(self, model: Yolo, nms: NmsConfig | None = None, cap_candidates: bool = True) -> None:
        super().__init__()
        self.model = model
        self.nms = EmbeddedNms(model.nc, nms, cap_candidates) if nms is not None else None

    def forward(self, images: torch.Tensor) -> Any:
        pred = self.model.head.decode(self.model.forward_levels(images, aux=False))
        return pred if self.nms is None else self.nms(pred)


@dataclass
class OnnxCheck:
    """ONNX Runtime vs PyTorch on the same probe input."""

    input_shapes: list[list[int]]
    max_box_px: float = 0.0  # decoded output (no NMS) or matched detections (NMS)
    max_prob: float = 0.0
    detections: list[int] = field(default_factory=list)  # per probe image, ONNX Runtime
    detections_torch: list[int] = field(default_factory=list)  # per probe image, PyTorch + core.nms
    same_classes: bool = True
    passed: bool = True

    def to_text(self) -> str:
        shapes = ", ".join("x".join(map(str, s)) for s in self.input_shapes)
        text = f"onnxruntime check on {shapes}: max |box diff| {self.max_box_px:.3g} px, max |prob diff| "
        text += f"{self.max_prob:.3g}"
        if self.detections or self.detections_torch:
            text += f"; detections onnx {self.detections} vs torch {self.detections_torch}"
            text += f", same classes: {'yes' if self.same_classes else 'NO'}"
        return text + (" -> PASSED" if self.passed else " -> FAILED")


def export_onnx(
    model: Yolo,
    path: str | Path,
    *,
    img_size: int | tuple[int, int] = 640,
    batch: int = 1,
    dynamic: bool = False,
    nms: NmsConfig | None = None,
    opset: int = DEFAULT_OPSET,
    deploy: bool = True,
) -> Path:
    """Write ``model`` as ONNX (the fused deploy form unless ``deploy=False``); returns the path.

    ``dynamic``: batch, height and width are free (height and width multiples of the largest stride).
    ``nms``: embed NMS with these settings (see the module docstring). Class names, strides and settings are
    stored in the ONNX metadata (``names``, ``stride``, ``nms`` as JSON).
    """
    import onnx  # optional dependency: pip install yolov7-studio[export]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = convert_for_deploy(model, check=False).model if deploy else model
    net = net.float().cpu().eval()
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    stride = int(net.stride.max())
    if h % stride or w % stride:
        raise ExportError(f"image size {h}x{w} is not a multiple of the model's largest stride {stride}")
    rows = sum(net.head.na * (h // s) * (w // s) for s in net.head.strides) * (net.nc if nms and nms.multi_label else 1)
    wrapper = ExportModel(net, nms, cap_candidates=dynamic or (nms is not None and rows > nms.max_nms)).eval()
    x = probe_image((h, w), batch)
    outputs = ["output"] if nms is None else ["num_dets", "detections"]
    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({"output": {0: "batch", 1: "anchors"}} if nms is None else {o: {0: "batch"} for o in outputs})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; it needs no onnxscript
        torch.onnx.export(
            wrapper,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    meta = {
        "names": json.dumps(list(net.names)),
        "stride": json.dumps(list(net.head.strides)),
        "img_size": json.dumps([h, w]),
        "nms": json.dumps(asdict(nms) if nms is not None else None),
        "model": net.spec.name,
        "producer": "yolov7-studio",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with all graph optimizations."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def verify_onnx(
    path: str | Path | None,
    model: Yolo,
    *,
    nms: NmsConfig | None = None,
    inputs: list[torch.Tensor] | None = None,
    box_tol: float = 1e-2,
    prob_tol: float = 1e-4,
    run: Callable[[np.ndarray], np.ndarray] | None = None,
) -> OnnxCheck:
    """Run the exported file in ONNX Runtime and ``model`` (deploy form) in PyTorch on the same inputs.

    Without NMS the decoded outputs must agree within ``box_tol`` px / ``prob_tol``; with ``nms`` the detections
    of ONNX Runtime must equal :func:`core.nms.non_max_suppression` on the PyTorch output: same number, same
    classes in the same order, boxes within ``box_tol`` px, scores within ``prob_tol``.
    ``inputs`` default: a probe batch at the size (and fixed batch size) stored in the file.
    ``run``: another runtime of the same graph (``[B, 3, H, W]`` float32 -> decoded output, no NMS) to check
    instead of an ONNX Runtime session of ``path``; then ``inputs`` are required.
    """
    net = convert_for_deploy(model, check=False).model.float().cpu().eval()
    session: Any = None
    if run is not None:
        if inputs is None or nms is not None:
            raise ValueError("verify_onnx with run= needs inputs and checks the decoded output only (nms=None)")
    else:
        if path is None:
            raise ValueError("verify_onnx needs a path or run=")
        session = onnx_session(path)
    if session is not None and inputs is None:
        meta = session.get_modelmeta().custom_metadata_map
        h, w = json.loads(meta.get("img_size", "[640, 640]"))
        batch = session.get_inputs()[0].shape[0]
        inputs = [probe_image((h, w), batch if isinstance(batch, int) else 1)]
    assert inputs is not None
    check = OnnxCheck(input_shapes=[list(x.shape) for x in inputs])
    for x in inputs:
        ref = net(x)
        got = [run(x.numpy())] if run is not None else session.run(None, {"images": x.numpy()})
        if nms is None:
            out = torch.from_numpy(got[0])
            if out.shape != ref.shape:
                raise ExportError(f"{path or 'runtime'}: output shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
            check.max_box_px = max(check.max_box_px, float((out[..., :4] - ref[..., :4]).abs().max()))
            check.max_prob = max(check.max_prob, float((out[..., 4:] - ref[..., 4:]).abs().max()))
            continue
        num, dets = torch.from_numpy(got[0]), torch.from_numpy(got[1])
        for i, want in enumerate(apply_nms(ref, nms)):
            have = dets[i, : int(num[i])]
            check.detections.append(int(have.shape[0]))
            check.detections_torch.append(int(want.shape[0]))
            if have.shape != want.shape:
                check.same_classes = False
                continue
            if len(want):
                check.same_classes &= bool(torch.equal(have[:, 5], want[:, 5]))
                check.max_box_px = max(check.max_box_px, float((have[:, :4] - want[:, :4]).abs().max()))
                check.max_prob = max(check.max_prob, float((have[:, 4] - want[:, 4]).abs().max()))
    check.passed = (
        check.same_classes
        and check.detections == check.detections_torch
        and check.max_box_px <= box_tol
        and check.max_prob <= prob_tol
    )
    return check


def onnx_outputs_to_numpy(num_dets: np.ndarray, detections: np.ndarray) -> list[np.ndarray]:
    """Per image ``[n, 6]`` (x1, y1, x2, y2, score, class) from the embedded-NMS outputs."""
    return [detections[i, : int(n)] for i, n in enumerate(num_dets)]


# -- int8 ----------------------------------------------------------------------------------------------------------
def calibration_batches(paths: list[Path], img_size: int, stride: int = 32) -> list[np.ndarray]:
    """Training images letterboxed square to ``img_size`` (colour 114), as ``[1, 3, S, S]`` float32 RGB in [0, 1].

    Unreadable images are skipped; none readable is an :class:`ExportError`.
    """
    from core.inference.letterbox import letterbox
    from core.inference.sources import ImageReadError, read_image

    out = []
    for path in paths:
        try:
            arr, _ = letterbox(read_image(path), img_size, auto=False, stride=stride)
        except ImageReadError:
            continue
        out.append(np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0)
    if not out:
        raise ExportError(f"no readable calibration image among {len(paths)} files")
    return out


def quantize_int8(fp32_path: str | Path, path: str | Path, calibration: list[np.ndarray]) -> Path:
    """Post-training static int8 quantization (ONNX Runtime, QDQ) of an exported decoded graph (no NMS).

    Convolutions get int8 weights (per output channel, symmetric) and uint8 activations whose ranges come from
    ``calibration`` (MinMax); the decode at the end (sigmoid, grid, anchors) stays float32 so that boxes are not
    quantized. The QDQ file runs in ONNX Runtime and in OpenVINO (which executes it as int8).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"images": x}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return path


def save_openvino(onnx_path: str | Path, path: str | Path) -> Path:
    """Convert an ONNX file to OpenVINO IR (``.xml`` + ``.bin``, weights kept in their precision: no fp16)."""
    import openvino as ov

    path = Path(path).with_suffix(".xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    return path
