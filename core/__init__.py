"""yolov7-studio engine: a from-scratch YOLOv7 (models, assignment, loss, training, evaluation, deploy).

The public API lives in the submodules (``core.models``, ``core.checkpoint``, ...); ``core`` itself only
exposes the version so that importing it stays cheap.
"""

__version__ = "0.1.0"
