"""Turn a :class:`ModelSpec` into the list of layers, appended in official order.

Each layer is an ``nn.Module`` with two attributes: ``i`` (its index, which is the official layer number and
the ``model.{i}`` prefix of its state-dict keys) and ``f`` (the absolute index of its input layer, a list of
indices, or ``-1`` for the network input). Parameter-free layers (Concat, MP, Upsample, Shortcut) take an
index as in the official configs.

Auxiliary head wiring (``aux_wiring``; the aux layers are always appended after the lead convs, so every
earlier layer keeps its official index and only the aux 3x3 convs' inputs differ):

* ``"top-down"`` (official, the default): aux level P3 reads the last top-down ELAN (the block that feeds the P3
  lead), P4 the top-down ELAN before it, P5 the SPP block, i.e. the feature pyramid *before* the bottom-up path.
  yolov7-tiny: aux convs 77, 78, 79 read layers 57, 47, 37; yolov7: 105, 106, 107 read 75, 63, 51. This is the
  wiring of the official P6 training configs (E-ELAN: the second copy of each block, before the sum), and the
  only one the P6 models accept.
* ``"partial"`` (the paper's *partial* auxiliary head, a pyramid in the middle of the computational block): each
  aux level reads an intermediate layer of the ELAN block that feeds the *matching lead level* (the last top-down
  ELAN for P3, the two bottom-up ELANs for P4 and P5): the middle 3x3 conv of its chain (``chain[depth // 2]``,
  the first of two in yolov7-tiny, the second of four in yolov7, the third of six in yolov7x). The aux head
  thus supervises half a block's depth below the lead head instead of a separate, shallower pyramid.
  yolov7-tiny: aux convs 77, 78, 79 read layers 54, 62, 70 (32, 64, 128 channels at width 1);
  yolov7: 105, 106, 107 read 71, 84, 97 (64, 128, 256 channels). Same aux widths (``spec.aux``) and head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from core.models.blocks import MP, SP, SPPCSPC, Concat, Conv, DownC, ReOrg, RepConv, Shortcut, Upsample
from core.models.specs import Elan, ModelSpec

AUX_WIRINGS = ("top-down", "partial")


def check_aux_wiring(spec: ModelSpec, aux_wiring: str, with_aux: bool = True) -> None:
    """``ValueError`` for an unknown wiring, or ``"partial"`` on a P6 model (which keeps the official wiring)."""
    if aux_wiring not in AUX_WIRINGS:
        raise ValueError(f"unknown auxiliary-head wiring {aux_wiring!r}; choose one of {', '.join(AUX_WIRINGS)}")
    if with_aux and aux_wiring == "partial" and spec.family == "p6":
        raise ValueError(
            f"{spec.name}: the partial auxiliary-head wiring is for the P5 models (yolov7-tiny, yolov7, yolov7x and "
            "their scaled variants); the P6 models keep their official auxiliary wiring (top-down)"
        )


@dataclass
class Graph:
    """Accumulates layers and their output widths; every helper returns the index of the layer it added."""

    act: str
    layers: list[nn.Module] = field(default_factory=list)
    ch: list[int] = field(default_factory=list)
    middle: dict[int, int] = field(default_factory=dict)  # ELAN output index -> its middle 3x3 chain conv

    def add(self, module: nn.Module, f: int | list[int], c_out: int) -> int:
        i = len(self.layers)
        setattr(module, "i", i)  # noqa: B010 - plain attributes on an nn.Module
        setattr(module, "f", f)  # noqa: B010
        self.layers.append(module)
        self.ch.append(c_out)
        return i

    @property
    def last(self) -> int:
        return len(self.layers) - 1

    def width(self, f: int) -> int:
        return 3 if f == -1 else self.ch[f]

    def conv(self, f: int, c2: int, k: int = 1, s: int = 1) -> int:
        return self.add(Conv(self.width(f), c2, k, s, self.act), f, c2)

    def repconv(self, f: int, c2: int) -> int:
        return self.add(RepConv(self.width(f), c2, 3, 1, self.act), f, c2)

    def concat(self, fs: list[int]) -> int:
        return self.add(Concat(1), list(fs), sum(self.ch[j] for j in fs))

    def maxpool(self, f: int) -> int:
        return self.add(MP(), f, self.ch[f])

    def upsample(self, f: int) -> int:
        return self.add(Upsample(), f, self.ch[f])

    # -- composite blocks ----------------------------------------------------------------------------------
    def elan(self, f: int, e: Elan) -> int:
        """ELAN / ELAN-H: returns the index of the 1x1 transition conv."""
        a = self.conv(f, e.branch)
        b = self.conv(f, e.branch)
        chain = [b]
        for _ in range(e.depth):
            chain.append(self.conv(chain[-1], e.chain, 3))
        taps = [chain[j] for j in range(e.depth, 0, -e.step)] + [b, a]
        out = self.conv(self.concat(taps), e.out)
        self.middle[out] = chain[max(e.depth // 2, 1)]  # the partial aux head's tap (module docstring)
        return out

    def block(self, f: int, e: Elan, eelan: bool) -> tuple[int, int]:
        """An ELAN, or for E-ELAN two independent copies on the same input summed by a Shortcut.

        Returns ``(output, aux_tap)``: the aux head of yolov7-e6e reads the second copy before the sum.
        """
        first = self.elan(f, e)
        if not eelan:
            return first, first
        second = self.elan(f, e)
        return self.add(Shortcut(), [second, first], e.out), second

    def down(self, f: int, kind: str, c: int, extra: int | None = None) -> int:
        """Down-sampling by 2, optionally concatenated with a lateral input ``extra`` of the target stride."""
        if kind == "mp":
            out = self.maxpool(f)
        elif kind == "conv":
            out = self.conv(f, c, 3, 2)
        elif kind == "downc":
            out = self.add(DownC(self.width(f), c, 2, self.act), f, c)
        elif kind == "mpconv":  # MP: maxpool -> 1x1  ||  1x1 -> 3x3 s2, concatenated (2c channels)
            pooled = self.conv(self.maxpool(f), c)
            strided = self.conv(self.conv(f, c), c, 3, 2)
            return self.concat([strided, pooled] + ([extra] if extra is not None else []))
        else:
            raise ValueError(f"unknown down-sampling {kind!r}")
        return self.concat([out, extra]) if extra is not None else out

    def tiny_spp(self, f: int, c: int) -> int:
        """SPP of yolov7-tiny: max-pools 5/9/13 on one 1x1 branch, concatenated with the other 1x1 branch."""
        a = self.conv(f, c)
        b = self.conv(f, c)
        pools = [self.add(SP(k), b, c) for k in (5, 9, 13)]
        mixed = self.conv(self.concat(pools[::-1] + [b]), c)
        return self.conv(self.concat([mixed, a]), c)


@dataclass
class Layout:
    """Where the head reads from: lead inputs, aux inputs (empty without aux head) and their widths."""

    lead_from: list[int]
    aux_from: list[int]
    graph: Graph
    backbone_end: int  # index of the first layer after the backbone (the SPP block)


def build_layers(spec: ModelSpec, with_aux: bool, aux_wiring: str = "top-down") -> Layout:
    """Append every layer up to (not including) the detection head; see the module docstring.

    ``aux_wiring`` (only with ``with_aux``): ``"top-down"`` or ``"partial"`` (P5 and tiny models only).
    """
    check_aux_wiring(spec, aux_wiring, with_aux)
    g = Graph(spec.act)
    # -- stem ----------------------------------------------------------------------------------------------
    x = -1
    if spec.family == "p6":
        x = g.add(ReOrg(), -1, 12)
        x = g.conv(x, spec.stem[0], 3, 1)
    elif spec.family == "tiny":
        for c in spec.stem:
            x = g.conv(x, c, 3, 2)
    else:  # p5: 3x3 convs with strides 1, 2, 1, 2
        for c, s in zip(spec.stem, (1, 2, 1, 2)):
            x = g.conv(x, c, 3, s)
    # -- backbone ------------------------------------------------------------------------------------------
    stage_out: list[int] = []
    for i, e in enumerate(spec.backbone):
        if spec.family == "p6":
            x = g.down(x, spec.down, spec.down_widths[i])
        elif i > 0:
            x = g.down(x, spec.down, spec.down_widths[i - 1] if spec.down_widths else 0)
        x, _ = g.block(x, e, spec.eelan)
        stage_out.append(x)
    # -- SPP -----------------------------------------------------------------------------------------------
    backbone_end = g.last + 1
    if spec.family == "tiny":
        x = g.tiny_spp(x, spec.spp)
    else:
        x = g.add(SPPCSPC(g.width(x), spec.spp, act=spec.act), x, spec.spp)
    spp = x
    # -- top-down path -------------------------------------------------------------------------------------
    routes = stage_out[-2::-1][: len(spec.neck_td)]  # backbone outputs at the neck's strides, top to bottom
    td_out, td_tap = [spp], [spp]
    for c, e, route in zip(spec.lateral, spec.neck_td, routes):
        up = g.upsample(g.conv(x, c))
        x = g.concat([g.conv(route, c), up])
        x, tap = g.block(x, e, spec.eelan)
        td_out.append(x)
        td_tap.append(tap)
    # -- bottom-up path ------------------------------------------------------------------------------------
    lead_in = [x]
    partners = td_out[-2::-1]
    for c, e, partner in zip(spec.neck_down_widths, spec.neck_bu, partners):
        x = g.down(x, spec.neck_down, c, extra=partner)
        x, _ = g.block(x, e, spec.eelan)
        lead_in.append(x)
    # -- convs before the heads -----------------------------------------------------------------------------
    lead_from = [g.repconv(f, c) if spec.repconv else g.conv(f, c, 3) for f, c in zip(lead_in, spec.lead)]
    aux_from: list[int] = []
    if with_aux:
        if aux_wiring == "partial":  # the middle of the ELAN block that feeds each lead level
            aux_in = [g.middle[f] for f in lead_in]
        else:  # top-down: P3 tap, ..., top tap (= SPP)
            aux_in = td_tap[::-1]
        aux_from = [g.conv(f, c, 3) for f, c in zip(aux_in, spec.aux)]
    return Layout(lead_from, aux_from, g, backbone_end)
