"""Architecture specs of every YOLOv7 variant as frozen dataclasses, and compound scaling.

A spec holds only numbers (widths, depths, anchors); :mod:`core.models.builder` turns it into layers whose
indices are the official layer numbers. Values are the official configs' (FACTS.md 1a/1b).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["tiny", "p5", "p6"]
DownKind = Literal["mp", "mpconv", "conv", "downc"]

ANCHORS_TINY = (((10, 13), (16, 30), (33, 23)), ((30, 61), (62, 45), (59, 119)), ((116, 90), (156, 198), (373, 326)))
ANCHORS_P5 = (((12, 16), (19, 36), (40, 28)), ((36, 75), (76, 55), (72, 146)), ((142, 110), (192, 243), (459, 401)))
ANCHORS_P6 = (
    ((19, 27), (44, 40), (38, 94)),
    ((96, 68), (86, 152), (180, 137)),
    ((140, 301), (303, 264), (238, 542)),
    ((436, 615), (739, 380), (925, 792)),
)


@dataclass(frozen=True)
class Elan:
    """An (extended) efficient layer aggregation block.

    Two 1x1 convs of width ``branch`` read the block input; a chain of ``depth`` 3x3 convs of width ``chain``
    follows the second; every ``step``-th chain output (counted from the last), the second and the first 1x1
    are concatenated and a 1x1 transition conv maps them to ``out`` channels. ``step=2`` is the backbone ELAN,
    ``step=1`` the neck's ELAN-H (and tiny's ELAN).
    """

    branch: int
    chain: int
    depth: int
    step: int
    out: int

    @property
    def taps(self) -> int:
        """Number of concatenated tensors."""
        return len(range(self.depth - 1, -1, -self.step)) + 2


@dataclass(frozen=True)
class ModelSpec:
    """All numbers that define one YOLOv7 variant; see :func:`core.models.builder.build_layers`."""

    name: str
    family: Family
    act: Literal["silu", "leaky"]
    anchors: tuple[tuple[tuple[float, float], ...], ...]
    stem: tuple[int, ...]  # widths of the stem convs (before the first ELAN)
    down: DownKind  # backbone down-sampling between ELAN stages
    down_widths: tuple[int, ...]  # per down-sampling: mpconv branch width, or conv/downc output width
    backbone: tuple[Elan, ...]
    spp: int  # SPPCSPC width (tiny: its SP-based SPP width)
    lateral: tuple[int, ...]  # top-down path: width of the reduce conv and of the route conv, top to bottom
    neck_td: tuple[Elan, ...]  # top-down ELANs, top to bottom
    neck_down: DownKind  # bottom-up down-sampling
    neck_down_widths: tuple[int, ...]
    neck_bu: tuple[Elan, ...]  # bottom-up ELANs
    lead: tuple[int, ...]  # 3x3 convs before the lead head, one per level
    aux: tuple[int, ...]  # 3x3 convs before the auxiliary head, one per level
    repconv: bool = False  # lead convs are RepConv (yolov7)
    eelan: bool = False  # every ELAN duplicated and summed (E-ELAN, yolov7-e6e)
    default_aux: bool = False  # the official training config has the auxiliary head
    paper: tuple[float, float] | None = None  # (params in M, GFLOPs) as in the paper's table
    derived_from: str | None = None

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(8 * 2**i for i in range(len(self.anchors)))

    @property
    def num_levels(self) -> int:
        return len(self.anchors)

    @property
    def native_size(self) -> int:
        """Training image size of the official recipe (640 for P5, 1280 for P6)."""
        return 1280 if self.family == "p6" else 640


_TINY = ModelSpec(
    name="yolov7-tiny",
    family="tiny",
    act="leaky",
    anchors=ANCHORS_TINY,
    stem=(32, 64),
    down="mp",
    down_widths=(),
    backbone=(Elan(32, 32, 2, 1, 64), Elan(64, 64, 2, 1, 128), Elan(128, 128, 2, 1, 256), Elan(256, 256, 2, 1, 512)),
    spp=256,
    lateral=(128, 64),
    neck_td=(Elan(64, 64, 2, 1, 128), Elan(32, 32, 2, 1, 64)),
    neck_down="conv",
    neck_down_widths=(128, 256),
    neck_bu=(Elan(64, 64, 2, 1, 128), Elan(128, 128, 2, 1, 256)),
    lead=(128, 256, 512),
    aux=(128, 256, 512),
    paper=(6.2, 13.8),
)

_V7 = ModelSpec(
    name="yolov7",
    family="p5",
    act="silu",
    anchors=ANCHORS_P5,
    stem=(32, 64, 64, 128),
    down="mpconv",
    down_widths=(128, 256, 512),
    backbone=(
        Elan(64, 64, 4, 2, 256),
        Elan(128, 128, 4, 2, 512),
        Elan(256, 256, 4, 2, 1024),
        Elan(256, 256, 4, 2, 1024),
    ),
    spp=512,
    lateral=(256, 128),
    neck_td=(Elan(256, 128, 4, 1, 256), Elan(128, 64, 4, 1, 128)),
    neck_down="mpconv",
    neck_down_widths=(128, 256),
    neck_bu=(Elan(256, 128, 4, 1, 256), Elan(512, 256, 4, 1, 512)),
    lead=(256, 512, 1024),
    aux=(256, 512, 1024),
    repconv=True,
    paper=(36.9, 104.7),
)

_X = ModelSpec(
    name="yolov7x",
    family="p5",
    act="silu",
    anchors=ANCHORS_P5,
    stem=(40, 80, 80, 160),
    down="mpconv",
    down_widths=(160, 320, 640),
    backbone=(
        Elan(64, 64, 6, 2, 320),
        Elan(128, 128, 6, 2, 640),
        Elan(256, 256, 6, 2, 1280),
        Elan(256, 256, 6, 2, 1280),
    ),
    spp=640,
    lateral=(320, 160),
    neck_td=(Elan(256, 256, 6, 2, 320), Elan(128, 128, 6, 2, 160)),
    neck_down="mpconv",
    neck_down_widths=(160, 320),
    neck_bu=(Elan(256, 256, 6, 2, 320), Elan(512, 512, 6, 2, 640)),
    lead=(320, 640, 1280),
    aux=(320, 640, 1280),
    paper=(71.3, 189.9),
)


def _p6(
    name: str,
    stem: int,
    widths: tuple[int, ...],
    depth: int,
    down: DownKind,
    spp: int,
    neck: tuple[int, int, int],
    aux: tuple[int, ...],
    paper: tuple[float, float],
    eelan: bool = False,
) -> ModelSpec:
    """P6 variants share one shape: 5 stages with hidden widths 64..512 and a 3-level top-down/bottom-up neck."""
    hidden = (64, 128, 256, 384, 512)
    p5, p4, p3 = neck  # neck output widths at strides 32, 16, 8
    return ModelSpec(
        name=name,
        family="p6",
        act="silu",
        anchors=ANCHORS_P6,
        stem=(stem,),
        down=down,
        down_widths=widths,
        backbone=tuple(Elan(h, h, depth, 2, w) for h, w in zip(hidden, widths)),
        spp=spp,
        lateral=(p5, p4, p3),
        neck_td=(Elan(384, 192, depth, 1, p5), Elan(256, 128, depth, 1, p4), Elan(128, 64, depth, 1, p3)),
        neck_down=down,
        neck_down_widths=(p4, p5, spp),
        neck_bu=(Elan(256, 128, depth, 1, p4), Elan(384, 192, depth, 1, p5), Elan(512, 256, depth, 1, spp)),
        lead=(p3 * 2, p4 * 2, p5 * 2, spp * 2),
        aux=aux,
        eelan=eelan,
        default_aux=True,
        paper=paper,
    )


_W6 = _p6(
    "yolov7-w6", 64, (128, 256, 512, 768, 1024), 4, "conv", 512, (384, 256, 128), (320, 640, 960, 1280), (70.4, 360.0)
)
_E6 = _p6(
    "yolov7-e6", 80, (160, 320, 640, 960, 1280), 6, "downc", 640, (480, 320, 160), (320, 640, 960, 1280), (97.2, 515.2)
)
_D6 = _p6(
    "yolov7-d6",
    96,
    (192, 384, 768, 1152, 1536),
    8,
    "downc",
    768,
    (576, 384, 192),
    (384, 768, 1152, 1536),
    (154.7, 806.8),
)
_E6E = dataclasses.replace(_E6, name="yolov7-e6e", eelan=True, paper=(151.7, 843.2))

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _TINY,
        dataclasses.replace(_TINY, name="yolov7-tiny-silu", act="silu", paper=None),
        _V7,
        _X,
        _W6,
        _E6,
        _D6,
        _E6E,
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered variant; raises ``KeyError`` listing the known names."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(SPECS)}") from None


def _round_width(c: float, divisor: int = 8) -> int:
    return int(math.ceil(c / divisor) * divisor)


def compound_scale(spec: ModelSpec, depth: float = 1.5, width: float = 1.25, name: str | None = None) -> ModelSpec:
    """Compound scaling for concatenation-based models (paper Sec. 3.3 / Fig. 3c).

    Scaling the depth of a computational block (the chain of 3x3 convs inside each ELAN) changes the width
    of its concatenated output; so the transition layers (and every width that follows from them: stem,
    down-sampling, SPP, lateral, neck and head convs) are scaled by ``width`` together. Widths inside the
    computational blocks stay as they are. ``depth=1.5, width=1.25`` turns the yolov7 backbone into the
    yolov7x backbone exactly.
    """

    def w(c: int) -> int:
        return _round_width(c * width)

    def block(e: Elan) -> Elan:
        return Elan(e.branch, e.chain, max(1, round(e.depth * depth)), e.step, w(e.out))

    return dataclasses.replace(
        spec,
        name=name or f"{spec.name}-d{depth:g}w{width:g}",
        stem=tuple(w(c) for c in spec.stem),
        down_widths=tuple(w(c) for c in spec.down_widths),
        backbone=tuple(block(e) for e in spec.backbone),
        spp=w(spec.spp),
        lateral=tuple(w(c) for c in spec.lateral),
        neck_td=tuple(block(e) for e in spec.neck_td),
        neck_down_widths=tuple(w(c) for c in spec.neck_down_widths),
        neck_bu=tuple(block(e) for e in spec.neck_bu),
        lead=tuple(w(c) for c in spec.lead),
        aux=tuple(w(c) for c in spec.aux),
        paper=None,
        derived_from=spec.name,
    )


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """Plain-data form of a spec (lists, ints, strings), e.g. to store in a checkpoint."""
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict[str, Any]) -> ModelSpec:
    """Inverse of :func:`spec_to_dict`; validates the field names."""
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"unknown model spec fields: {sorted(unknown)}")
    elan_fields = ("backbone", "neck_td", "neck_bu")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k in elan_fields:
            kw[k] = tuple(Elan(**e) for e in v)
        elif k == "anchors":
            kw[k] = tuple(tuple((float(w), float(h)) for w, h in level) for level in v)
        elif isinstance(v, list):
            kw[k] = tuple(v)
        else:
            kw[k] = v
    return ModelSpec(**kw)


def scale_width(spec: ModelSpec, multiple: float, name: str | None = None) -> ModelSpec:
    """Every channel width times ``multiple`` (rounded up to a multiple of 8), as the official
    ``width_multiple``: the same topology at a fraction of the cost (used by fast tests and small experiments)."""

    def w(c: int) -> int:
        return max(8, _round_width(c * multiple))

    def block(e: Elan) -> Elan:
        return Elan(w(e.branch), w(e.chain), e.depth, e.step, w(e.out))

    return dataclasses.replace(
        spec,
        name=name or f"{spec.name}-w{multiple:g}",
        stem=tuple(w(c) for c in spec.stem),
        down_widths=tuple(w(c) for c in spec.down_widths),
        backbone=tuple(block(e) for e in spec.backbone),
        spp=w(spec.spp),
        lateral=tuple(w(c) for c in spec.lateral),
        neck_td=tuple(block(e) for e in spec.neck_td),
        neck_down_widths=tuple(w(c) for c in spec.neck_down_widths),
        neck_bu=tuple(block(e) for e in spec.neck_bu),
        lead=tuple(w(c) for c in spec.lead),
        aux=tuple(w(c) for c in spec.aux),
        paper=None,
        derived_from=spec.name,
    )
