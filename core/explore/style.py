"""Shared look of the explorer's figures: box colours, the heatmap colour scale, images as data URIs, and the
plotly trace primitives (image, heatmap, rectangles) placed in input-pixel coordinates.

Coordinates: x to the right, y down, in input pixels with pixel ``i`` covering ``[i, i + 1)``; so a grid cell
``(gj, gi)`` of stride ``s`` is the square ``[gi * s, (gi + 1) * s) x [gj * s, (gj + 1) * s)``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np
import plotly.graph_objects as go

# bright, mutually distinct colours that stay visible over a dark heatmap and a grey image
BOX_COLOURS: tuple[str, ...] = (
    "#00e5ff", "#ff3df2", "#7CFC00", "#ff9f1c", "#ff3b3b", "#4d7cff", "#ffe600", "#00ffa3",
    "#c77dff", "#ff7aa2", "#b8ff5c", "#5cf2ff", "#ff6d00", "#1de9b6", "#e040fb", "#ffd180",
    "#82b1ff", "#c6ff00",
)  # fmt: skip
FINE_COLOUR = "#1f77b4"  # the fine (lead) set in statistics plots
COARSE_COLOUR = "#ff7f0e"  # the coarse (aux) set in statistics plots
LEVEL_COLOURS: tuple[str, ...] = ("#440154", "#31688e", "#35b779", "#fde725", "#e15759")

# transparent-to-white colour scale over a darkened grey image: bright = the head fires there; kept colourless so
# that the coloured cells and boxes (one colour per box) stand out on top of it
HEAT_SCALE: list[list[float | str]] = [
    [0.0, "rgba(255,255,255,0.0)"],
    [0.1, "rgba(255,255,255,0.2)"],
    [0.4, "rgba(255,255,255,0.5)"],
    [1.0, "rgba(255,255,255,0.95)"],
]
IMAGE_DIM = 0.4  # brightness of the grey image under the maps


def box_colour(index: int) -> str:
    """Colour of ground-truth box ``index`` (cycled)."""
    return BOX_COLOURS[index % len(BOX_COLOURS)]


def rgba(hex_colour: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r,g,b,alpha)``."""
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def data_uri(rgb: np.ndarray, *, grey: bool = False, dim: float = 1.0, fmt: str = ".png") -> str:
    """``[H, W, 3]`` RGB uint8 -> a base64 data URI (optionally greyscale and darkened by ``dim`` in (0, 1])."""
    img = rgb.astype(np.float32)
    if grey:
        img = np.repeat((img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None], 3, axis=2)
    img = np.clip(img * dim, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes PNG/JPEG
        raise RuntimeError("could not encode the image")
    mime = "jpeg" if fmt in (".jpg", ".jpeg") else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def image_trace(uri: str, size: tuple[int, int]) -> go.Image:
    """The image as a trace whose pixel ``i`` spans ``[i, i + 1)`` (``size`` = (w, h), only for the docstring)."""
    return go.Image(source=uri, x0=0.5, y0=0.5, dx=1, dy=1, hoverinfo="skip", name="image", meta={"role": "image"})


def heatmap_trace(z: np.ndarray, stride: int, zmax: float, *, name: str, colorbar_title: str | None,
                  colorbar_x: float = 1.0, hover_label: str = "value") -> go.Heatmap:  # fmt: skip
    """``z`` ``[H, W]`` drawn over cells of ``stride`` input pixels; colour range ``[0, zmax]``.

    ``colorbar_title`` None hides the colour bar (use one bar for maps sharing a range)."""
    zmax = float(max(zmax, 1e-6))
    return go.Heatmap(
        z=z, x0=stride / 2, dx=stride, y0=stride / 2, dy=stride, zmin=0.0, zmax=zmax, colorscale=HEAT_SCALE,
        showscale=colorbar_title is not None, name=name, zsmooth=False,
        colorbar={"title": {"text": colorbar_title or "", "side": "right", "font": {"color": "white"}},
                  "x": colorbar_x, "len": 0.8, "thickness": 14, "bgcolor": "#555", "outlinewidth": 0,
                  "tickfont": {"color": "white"}},
        hovertemplate=f"cell centre x %{{x}}, y %{{y}} px<br>{hover_label} %{{z:.4f}}<extra>{name}</extra>",
    )  # fmt: skip


def rect_path(cells: Sequence[tuple[int, int]], stride: float, inset: float = 0.0) -> tuple[list, list]:
    """Closed outlines of cells ``(gj, gi)`` as one x/y path with ``None`` breaks (for a scatter trace)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for gj, gi in cells:
        x0, y0 = gi * stride + inset, gj * stride + inset
        x1, y1 = (gi + 1) * stride - inset, (gj + 1) * stride - inset
        xs += [x0, x1, x1, x0, x0, None]
        ys += [y0, y0, y1, y1, y0, None]
    return xs, ys


def box_path(xyxy: Sequence[Sequence[float]]) -> tuple[list, list]:
    """Closed outlines of ``[N, 4]`` xyxy boxes as one x/y path with ``None`` breaks."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for x1, y1, x2, y2 in xyxy:
        xs += [x1, x2, x2, x1, x1, None]
        ys += [y1, y1, y2, y2, y1, None]
    return xs, ys
