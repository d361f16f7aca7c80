"""File helpers shared by the format readers: image probing (size, EXIF orientation), listing and split names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.data.types import IMAGE_SUFFIXES, Issue

# EXIF orientation values that swap width and height when applied (transpose / 90-degree rotations).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "train2017": "train",
    "train2014": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "val2017": "val",
    "val2014": "val",
    "test": "test",
    "testing": "test",
    "test2017": "test",
    "test-dev": "test",
}


@dataclass(frozen=True)
class ImageProbe:
    """What the image header says: displayed size, EXIF orientation (1 = none) and the decoder's format name."""

    width: int
    height: int
    orientation: int
    format: str


def is_image_file(path: Path) -> bool:
    """True for a file name with an image suffix (content is not looked at)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def probe_image(path: Path) -> ImageProbe | str:
    """Read only the header of an image: its displayed size, or a reason string when it cannot be opened.

    The returned size has the EXIF orientation applied (rotations by 90 degrees swap width and height), which is the
    frame labelling tools and ``cv2.imread`` use.
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format or "?"
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
            except Exception:  # noqa: BLE001 - broken EXIF blocks must not make the image unreadable
                orientation = 1
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image PIL can identify (corrupt or unsupported format)"
    except (OSError, ValueError, SyntaxError) as exc:
        return f"cannot be opened: {exc}"
    if width <= 0 or height <= 0:
        return f"invalid size {width}x{height}"
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageProbe(width=width, height=height, orientation=orientation, format=fmt)


def walk_files(folder: Path) -> list[Path]:
    """All files under ``folder`` (recursive, sorted, hidden files and folders skipped)."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def normalize_split(name: str) -> str | None:
    """Map folder/file split names (``valid``, ``val2017``, ``instances_train2017`` ...) to train/val/test."""
    stem = name.lower()
    if stem in _SPLIT_ALIASES:
        return _SPLIT_ALIASES[stem]
    for token in stem.replace("-", "_").replace(".", "_").split("_"):
        if token in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[token]
    return None


def relative_key(path: Path, root: Path) -> str:
    """Stable image key: path relative to ``root`` without suffix, with forward slashes."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def output_stems(keys: list[str]) -> list[str]:
    """File stems for writing: the last path part of each key, or the whole key with ``/`` -> ``__`` where two
    keys share a last part (so that flattening folders never makes two images collide)."""
    last = [k.rsplit("/", 1)[-1] for k in keys]
    counts: dict[str, int] = {}
    for name in last:
        counts[name] = counts.get(name, 0) + 1
    return [name if counts[name] == 1 else key.replace("/", "__") for name, key in zip(last, keys)]


def exif_issue(image: Path, orientation: int) -> Issue:
    """The issue for an image whose EXIF orientation is not 1: rotated (2..8), or an invalid value (ignored)."""
    if not 1 <= orientation <= 8:
        return Issue(
            str(image),
            "exif_invalid",
            f"EXIF orientation {orientation} is invalid (valid values are 1..8): it is ignored and the image is used "
            "as stored, not rotated; labels must refer to that view",
            "kept",
            "image",
        )
    return Issue(
        str(image),
        "exif_rotated",
        f"EXIF orientation {orientation}: the image is used as displayed (rotated); labels must refer to that view",
        "kept",
        "image",
    )
