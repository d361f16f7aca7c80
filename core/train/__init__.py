"""Training: the official YOLOv7 recipe with EMA, warmup, accumulation, resume, early stop and DDP.

>>> from core.train import TrainConfig, train
>>> train(TrainConfig(data="datasets/demo", model="yolov7-tiny", epochs=30, img=320, out="runs/demo"))
"""

from core.train.config import SMALL_DATASET_IMAGES, TrainConfig
from core.train.hooks import Hook
from core.train.rundir import RunDir
from core.train.trainer import Trainer, fitness, train

__all__ = ["SMALL_DATASET_IMAGES", "Hook", "RunDir", "TrainConfig", "Trainer", "fitness", "train"]
