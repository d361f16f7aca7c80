"""Deployment and inference: verified deploy conversion, letterbox, predictor, drawing.

>>> from core.inference import Predictor, convert_for_deploy
>>> conversion = convert_for_deploy(model)          # fused deploy form + self-check report
>>> print(conversion.check.to_text())
>>> detections = Predictor(conversion.model)(["a.jpg", "b.png"])
>>> Predictor("best.pt", backend="auto").backend      # 'onnxruntime' on a CPU with the export extra
"""

from __future__ import annotations

from core.inference.backends import BACKENDS, BackendError
from core.inference.deploy import DeployConversion, ReparamCheck, ReparamError, check_deploy, convert_for_deploy
from core.inference.draw import draw_detections
from core.inference.eval_view import eval_view
from core.inference.letterbox import LetterboxInfo, letterbox, letterbox_geometry
from core.inference.predictor import Predictions, Predictor, flush_denormals
from core.inference.probe import probe_image, well_conditioned_
from core.inference.results import COCO80_TO_COCO91, Detections
from core.inference.sources import ImageReadError, InputImage, expand_paths, load_inputs, read_image

__all__ = [
    "BACKENDS",
    "BackendError",
    "COCO80_TO_COCO91",
    "DeployConversion",
    "Detections",
    "ImageReadError",
    "InputImage",
    "LetterboxInfo",
    "Predictions",
    "Predictor",
    "ReparamCheck",
    "ReparamError",
    "check_deploy",
    "convert_for_deploy",
    "draw_detections",
    "eval_view",
    "expand_paths",
    "flush_denormals",
    "letterbox",
    "letterbox_geometry",
    "load_inputs",
    "probe_image",
    "read_image",
    "well_conditioned_",
]
