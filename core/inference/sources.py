"""Inputs of the predictor: image files, folders, glob patterns, PIL images and numpy arrays.

Everything becomes an :class:`InputImage` holding an ``[H, W, 3]`` **RGB uint8** array (the convention of the
whole engine; OpenCV's BGR is never exposed). Files are decoded with PIL and turned upright by their EXIF
orientation, as ``cv2.imread`` (used by the official code) does. Numpy arrays must already be ``[H, W, 3]``
RGB uint8 (``[H, W]`` grey and ``[H, W, 4]`` RGBA are accepted; alpha is dropped), or a batch ``[B, H, W, 3]``.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.data.types import IMAGE_SUFFIXES

Source = Union[str, Path, Image.Image, np.ndarray, "InputImage"]


class ImageReadError(ValueError):
    """An input that cannot be used as an image; the message names it and says why."""


@dataclass
class InputImage:
    """One image: ``array`` ``[H, W, 3]`` RGB uint8, a display ``name`` and the file it came from (if any)."""

    array: np.ndarray
    name: str
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)``."""
        return int(self.array.shape[0]), int(self.array.shape[1])


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``[H, W, 3]`` RGB uint8, EXIF orientation applied; :class:`ImageReadError` if not."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as opened:
            opened.load()
            return pil_to_array(ImageOps.exif_transpose(opened) or opened)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image PIL can read (corrupt or unsupported format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot decode image ({exc})") from None


def pil_to_array(im: Image.Image) -> np.ndarray:
    """PIL image (any mode) to ``[H, W, 3]`` RGB uint8; transparency is dropped, not composited."""
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def check_array(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """Validate and normalise one ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]`` uint8 array to ``[H, W, 3]`` RGB."""
    if arr.dtype != np.uint8:
        raise ImageReadError(f"{name}: expected a uint8 RGB array [H, W, 3], got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageReadError(f"{name}: expected an RGB array [H, W, 3], got shape {tuple(arr.shape)}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageReadError(f"{name}: empty image of shape {tuple(arr.shape)}")
    return np.ascontiguousarray(arr[:, :, :3])


def expand_paths(sources: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their images, sorted, not recursive, as the official ``detect.py``) and glob patterns.

    Raises :class:`ImageReadError` for a path that does not exist or a folder or pattern without images.
    """
    out: list[Path] = []
    for src in sources:
        text = str(src)
        path = Path(text)
        if any(c in text for c in "*?[") and not path.exists():
            hits = sorted(Path(p) for p in glob.glob(text, recursive=True))
            files = [p for p in hits if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise ImageReadError(f"{text}: the pattern matches no image files")
            out.extend(files)
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageReadError(f"{path}: folder contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(files)
        elif path.is_file():
            out.append(path)
        else:
            raise ImageReadError(f"{path}: no such file or folder")
    return out


def load_inputs(sources: Source | Iterable[Source] | np.ndarray) -> list[InputImage]:
    """Everything the predictor accepts, as a flat list of :class:`InputImage` (see the module docstring).

    A single source or a list of them; a ``[B, H, W, 3]`` array is a batch of ``B`` images.
    """
    if isinstance(sources, (str, Path, Image.Image, InputImage)):
        items: list[Any] = [sources]
    elif isinstance(sources, np.ndarray):
        items = list(sources) if sources.ndim == 4 else [sources]
    else:
        items = list(sources)
    out: list[InputImage] = []
    for k, item in enumerate(items):
        if isinstance(item, InputImage):
            out.append(item)
        elif isinstance(item, (str, Path)):
            for path in expand_paths([item]):
                out.append(InputImage(read_image(path), str(path), path))
        elif isinstance(item, Image.Image):
            out.append(InputImage(pil_to_array(item), f"<PIL image {k}>"))
        elif isinstance(item, np.ndarray):
            name = f"<array {k}>"
            out.append(InputImage(check_array(item, name), name))
        else:
            raise ImageReadError(
                f"input {k}: unsupported type {type(item).__name__} (expected a path, a folder, a PIL image "
                "or a uint8 RGB numpy array [H, W, 3])"
            )
    return out
