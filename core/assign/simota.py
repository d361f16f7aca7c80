"""Step 2 of the assignment: SimOTA selection among the candidates, vectorized over the batch.

Rules (FACTS.md 1c): the candidate pool of an image is the union of the step-1 cells of all its boxes over all
levels (duplicates kept). Every candidate is decoded from the lead predictions. For each box ``g`` and candidate
``c``: ``iou`` = plain IoU, ``cost = cls_cost + 3 * -log(iou + 1e-8)`` where ``cls_cost`` is the summed BCE of
``sqrt(sigmoid(cls) * sigmoid(obj))`` against the one-hot class. ``dynamic_k = max(1, int(sum of the top-k IoUs))``;
each box takes its ``dynamic_k`` cheapest candidates; a candidate taken by several boxes goes to the box with the
lowest cost on it (among all boxes of the image, first box on ties). Gt boxes are scaled by the image height.

Vectorization and memory: all boxes of the batch are rows of one padded ``[rows, columns]`` problem (columns =
candidates of the row's image), processed in row chunks (then contested columns in column chunks) so that the
matrix work holds at most about ``4 bytes x max_chunk_elements`` at a time: 32 MB with the default 2**23 (measured
with the RSS high-water mark; one box row, ~256 bytes per candidate of its image, is never split). This does not
grow with the number of boxes per image. What does grow, linearly, is the per-candidate data: about
``24 x candidates x nc`` bytes (class logits, BCE terms, cached exact rows), e.g. 80 MB for one image with 2000
boxes (41k coarse candidates, 80 classes), where the official per-image ``[boxes, candidates, nc]`` tensors
would need hundreds of GB. Conflicts are resolved after all row chunks, on exact costs of the contested columns.

Exactness: every cost is computed with the same float32 operations as the official code. The class cost is first
taken from a cheap decomposition with a proven error bound; a box whose k-th and (k+1)-th cheapest costs are not
separated by that bound is redone on exact (full-row-sum) costs, and where those tie (duplicate cells) with
``torch.topk`` on the box's official row, reproducing the official tie-break. The result therefore equals the
per-image official algorithm, up to the last-bit differences that ATen's SIMD tail handling gives the official
code itself depending on tensor sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from core.assign.candidates import COARSE_OFFSET, FINE_OFFSET, find_candidates
from core.assign.costs import IOU_COST_WEIGHT, CandidateTable, approx_class_cost, decode_candidates, exact_class_cost
from core.assign.types import Assignment, ImageMatrices, LevelCells
from core.boxes import box_iou_rows, xywh_to_xyxy

__all__ = ["assign", "DEFAULT_CHUNK_ELEMENTS"]

DEFAULT_CHUNK_ELEMENTS = 1 << 23
_WORDS_PER_CELL = 64  # 4-byte words per matrix cell: measured peak of live buffers and temporaries (RSS slope)


@torch.no_grad()
def assign(
    predictions: Sequence[Tensor],
    targets: Tensor,
    anchors: Tensor,
    strides: Tensor,
    img_size: int,
    *,
    coarse: bool = False,
    topk: int = 10,
    anchor_t: float = 4.0,
    keep_matrices: bool = False,
    max_chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Assignment:
    """Assign positives for a batch (the official ``build_targets`` / ``build_targets2``), vectorized.

    Args:
        predictions: the LEAD levels only, ``[B, na, H, W, 5 + nc]`` raw outputs (read, never differentiated).
        targets: ``[N, 6]`` (image, class, x, y, w, h), xywh normalized to the network input, any row order.
        anchors: ``[nl, na, 2]`` in grid units; strides: ``[nl]`` pixels.
        img_size: network input height in pixels (the official code scales gt x and y by the height).
        coarse: False = fine set (lead head, 3 cells, g = 0.5); True = coarse set (aux head, 5 cells, g = 1.0).
        topk: number of top IoUs summed for dynamic k (10 without an aux head, 20 with one, for both sets).
        anchor_t: anchor shape filter threshold.
        keep_matrices: also return the per-image IoU / exact cost matrices (for inspection; slower, and the
            returned matrices themselves are not memory-bounded).
        max_chunk_elements: memory bound of the chunked ``[rows, columns]`` work (see the module docstring).

    Returns:
        An ``Assignment`` whose per-level positives are in the official order (image, then candidate order).
    """
    device = predictions[0].device
    nl = len(predictions)
    batch, nc = predictions[0].shape[0], predictions[0].shape[-1] - 5
    grids = [(int(p.shape[2]), int(p.shape[3])) for p in predictions]
    targets = targets.detach().to(device=device, dtype=torch.float32)
    _check_targets(targets, batch, nc)
    cands = find_candidates(targets, anchors, grids, COARSE_OFFSET if coarse else FINE_OFFSET, anchor_t)
    dynamic_k = torch.zeros(targets.shape[0], dtype=torch.long, device=device)
    matrices: list[ImageMatrices] | None = [] if keep_matrices else None
    result = Assignment([LevelCells.empty(device) for _ in range(nl)], cands, dynamic_k, coarse, topk, matrices)
    if sum(len(c) for c in cands) == 0:
        return result
    table = decode_candidates([p.detach() for p in predictions], cands, strides, batch)

    # Rows: boxes grouped by image (stable: targets order within an image); images without candidates drop out.
    t_image = targets[:, 0].long()
    row_target = torch.sort(t_image, stable=True).indices
    row_target = row_target[table.count[t_image[row_target]] > 0]
    rows = _Rows(
        row_target,
        t_image[row_target],
        targets[row_target, 1].long(),
        xywh_to_xyxy(targets[row_target, 2:6] * img_size),
        table,
        max_chunk_elements,
    )
    n_cols = len(table)
    taken = torch.zeros(n_cols, dtype=torch.long, device=device)
    taker = torch.zeros(n_cols, dtype=torch.long, device=device)
    per_cell = _WORDS_PER_CELL + (table.bce_neg.shape[1] if keep_matrices else 0)
    lo = 0
    while lo < len(row_target):
        hi = _chunk_end(rows.count, lo, max(1, max_chunk_elements // per_cell))
        sel_row, sel_col, k = _chunk(rows, lo, hi, topk, keep_matrices, max_chunk_elements, matrices)
        dynamic_k[row_target[lo:hi]] = k
        taken.index_add_(0, sel_col, torch.ones_like(sel_col))
        taker[sel_col] = sel_row
        lo = hi

    pos_col = torch.nonzero(taken > 0).flatten()
    owner = taker[pos_col]
    contested = taken[pos_col] > 1
    if bool(contested.any()):
        owner[contested] = _cheapest_rows(rows, pos_col[contested])
    pos_iou, pos_cost = rows.exact_cost(owner, pos_col)
    level = table.level[pos_col]
    positives = []
    for i, c in enumerate(cands):
        m = level == i
        idx = table.index[pos_col[m]]
        gt = row_target[owner[m]]
        positives.append(
            LevelCells(c.b[idx], c.a[idx], c.gj[idx], c.gi[idx], gt, c.anchor_wh[idx], idx, pos_iou[m], pos_cost[m])
        )
    if matrices is not None:
        _merge_matrices(matrices)
    return Assignment(positives, cands, dynamic_k, coarse, topk, matrices)


def _check_targets(targets: Tensor, batch: int, nc: int) -> None:
    """Refuse rows the official code would crash on or silently drop (image or class out of range)."""
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be [N, 6] (image, class, x, y, w, h), got {tuple(targets.shape)}")
    if targets.numel() == 0:
        return
    image, cls = targets[:, 0], targets[:, 1]
    if bool((image < 0).any() | (image >= batch).any()):
        raise ValueError(f"target image indices must lie in [0, {batch - 1}]")
    if bool((cls < 0).any() | (cls >= nc).any()):
        raise ValueError(f"target classes must lie in [0, {nc - 1}]")


class _Rows:
    """The boxes as matrix rows (grouped by image) with what a row needs to address its image's columns.

    Exact class costs depend on (image, class) only, so rows share them through ``key = image * nc + class``.
    """

    def __init__(
        self, target: Tensor, image: Tensor, cls: Tensor, xyxy: Tensor, table: CandidateTable, max_elements: int
    ) -> None:
        self.target, self.image, self.cls, self.xyxy, self.table = target, image, cls, xyxy, table
        self.max_elements = max_elements
        n_images = table.count.numel()
        self.count = table.count[image]  # columns of each row
        self.start = table.start[image]
        per_image = torch.bincount(image, minlength=n_images)
        self.first = torch.cumsum(per_image, 0) - per_image  # first row of each image
        self.per_image = per_image
        bound = torch.zeros(n_images, device=image.device)
        bound = bound.scatter_reduce(0, table.image, table.bound, "amax")
        self.bound = bound[image]  # error bound of the approximate costs of each row
        nc = table.logit.shape[1]
        self.nc = nc
        # distinct (image, class) keys, sorted, hence grouped by image; each row's key index
        self.keys, self.key_index = torch.unique(image * nc + cls, return_inverse=True)
        keys_per_image = torch.bincount(self.keys // nc, minlength=n_images)
        self.keys_per_image = keys_per_image
        self.key_first = torch.cumsum(keys_per_image, 0) - keys_per_image
        self._exact_rows: dict[int, Tensor] = {}

    def exact_cost(self, row: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
        """IoU and exact cost of ``[P]`` (row, flat column) pairs."""
        iou = box_iou_rows(self.xyxy[row], self.table.boxes[col, None]).squeeze(1)
        cls = exact_class_cost(self.table, col, self.cls[row], self.max_elements)
        return iou, cls + IOU_COST_WEIGHT * -torch.log(iou + 1e-8)

    def exact_class_rows(self, rows: Tensor, width: int) -> Tensor:
        """Exact class costs of ``rows`` on all columns of their image, ``[len(rows), width]``, +inf padded.

        Computed once per (image, class) key and kept (at most ``nc`` values per candidate).
        """
        uniq, inv = torch.unique(self.key_index[rows], return_inverse=True)
        missing = [u for u in uniq.tolist() if u not in self._exact_rows]
        if missing:
            key = self.keys[torch.tensor(missing, device=rows.device)]
            img, cls = key // self.nc, key % self.nc
            n = self.table.count[img]
            which = torch.repeat_interleave(torch.arange(len(missing), device=rows.device), n)
            col = (
                self.table.start[img][which]
                + torch.arange(int(n.sum()), device=rows.device)
                - (torch.cumsum(n, 0) - n)[which]
            )
            values = exact_class_cost(self.table, col, cls[which], self.max_elements)
            for u, v in zip(missing, values.split(n.tolist())):
                self._exact_rows[u] = v
        out = torch.full((len(uniq), width), float("inf"), device=rows.device)
        for i, u in enumerate(uniq.tolist()):
            v = self._exact_rows[u]
            out[i, : len(v)] = v
        return out[inv]

    def exact_column_costs(self, cols: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Exact costs of every row of its image on each of ``cols``.

        Returns:
            ``q`` (which column), ``row`` and ``cost``, ``[P]`` each, in (column, row) order.
        """
        dev = cols.device
        img = self.table.image[cols]
        # the class part once per (column, key of its image)
        nk = self.keys_per_image[img]
        kq = torch.repeat_interleave(torch.arange(len(cols), device=dev), nk)
        k_off = torch.cumsum(nk, 0) - nk
        key = self.keys[self.key_first[img][kq] + torch.arange(int(nk.sum()), device=dev) - k_off[kq]]
        cls_cost = exact_class_cost(self.table, cols[kq], key % self.nc, self.max_elements)
        # then every row of the image
        n = self.per_image[img]
        q = torch.repeat_interleave(torch.arange(len(cols), device=dev), n)
        row = self.first[img][q] + torch.arange(int(n.sum()), device=dev) - (torch.cumsum(n, 0) - n)[q]
        rank = self.key_index[row] - self.key_first[img][q]
        iou = box_iou_rows(self.xyxy[row], self.table.boxes[cols[q], None]).squeeze(1)
        cost = cls_cost[k_off[q] + rank] + IOU_COST_WEIGHT * -torch.log(iou + 1e-8)
        return q, row, cost


def _chunk(
    rows: _Rows, lo: int, hi: int, topk: int, exact: bool, max_elements: int, matrices: list[ImageMatrices] | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Selections of rows ``lo:hi``: (row, flat column) pairs, and the rows' dynamic k."""
    table = rows.table
    device = rows.count.device
    count = rows.count[lo:hi]
    width = int(count.max())
    j = torch.arange(width, device=device)
    valid = j < count[:, None]  # [R, W]
    col = (rows.start[lo:hi, None] + j).clamp(max=len(table) - 1)
    cls = rows.cls[lo:hi, None].expand_as(col)
    iou = box_iou_rows(rows.xyxy[lo:hi], table.boxes[col]).masked_fill_(~valid, 0.0)
    iou_cost = IOU_COST_WEIGHT * -torch.log(iou + 1e-8)
    if exact:
        cls_cost = torch.zeros_like(iou)
        cls_cost[valid] = exact_class_cost(table, col[valid], cls[valid], max_elements)
    else:
        cls_cost = approx_class_cost(table, col, cls)
        hard = table.saturated[col] & valid
        if bool(hard.any()):
            cls_cost[hard] = exact_class_cost(table, col[hard], cls[hard], max_elements)
    cost = (cls_cost + iou_cost).masked_fill_(~valid, float("inf"))
    k = _dynamic_k(iou, count, topk)
    if exact:
        sel_row, sel_pos = _select(cost, k, count)
    else:
        sel_row, sel_pos, unsure = _select_certain(cost, k, count, rows.bound[lo:hi])
        if unsure.numel():
            # redo the undecided rows on exact costs
            sub = rows.exact_class_rows(unsure + lo, width) + iou_cost[unsure]
            sub = sub.masked_fill_(~valid[unsure], float("inf"))
            r, p = _select(sub, k[unsure], count[unsure])
            sel_row, sel_pos = torch.cat((sel_row, unsure[r])), torch.cat((sel_pos, p))
    if matrices is not None:
        selected = torch.zeros_like(valid)
        selected[sel_row, sel_pos] = True
        _keep_matrices(matrices, iou, cost, k, selected, rows, lo, hi)
    return sel_row + lo, col[sel_row, sel_pos], k


def _chunk_end(row_count: Tensor, lo: int, max_cells: int) -> int:
    """End (exclusive) of the row chunk starting at ``lo``: rows are added while rows x widest row fits."""
    widths = torch.cummax(row_count[lo:], 0).values
    cells = widths * torch.arange(1, widths.numel() + 1, device=row_count.device)
    return lo + max(1, int((cells <= max_cells).sum()))


def _dynamic_k(iou: Tensor, count: Tensor, topk: int) -> Tensor:
    """``max(1, int(sum of the top-min(topk, C) IoUs))`` per row, summed over exactly as many values as officially.

    Args:
        iou: ``[R, W]`` with padding 0; count: ``[R]`` valid columns per row.
    """
    total = torch.empty(iou.shape[0], dtype=iou.dtype, device=iou.device)
    full = count >= topk
    if bool(full.any()):
        total[full] = iou[full].topk(topk, dim=1).values.sum(1)
    for c in torch.unique(count[~full]).tolist():
        m = count == c
        total[m] = iou[m, :c].topk(c, dim=1).values.sum(1)
    return total.int().clamp(min=1).long()


def _select_certain(cost: Tensor, k: Tensor, count: Tensor, bound: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k selection on approximate costs where it is provably the exact one.

    A row is certain when its (k+1)-th cheapest approximate cost exceeds the k-th by more than twice the error
    bound (then every chosen cost is exactly below every other one), or when it has only k columns; and its k-th
    cost is finite.

    Returns:
        (row, position) pairs of the certain rows, and the indices of the uncertain rows.
    """
    kk = min(int(k.max()) + 1, cost.shape[1])
    vals, pos = cost.topk(kk, dim=1, largest=False)
    has_next = k < count
    last = vals.gather(1, (k - 1)[:, None]).squeeze(1)
    nxt = vals.gather(1, k.clamp(max=kk - 1)[:, None]).squeeze(1)
    unsure = (has_next & ~(nxt - last > 2 * bound)) | ~torch.isfinite(last)
    take = (torch.arange(kk, device=cost.device) < k[:, None]) & ~unsure[:, None]
    sel_row, sel_rank = torch.nonzero(take, as_tuple=True)
    return sel_row, pos[sel_row, sel_rank], torch.nonzero(unsure).flatten()


def _select(cost: Tensor, k: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of the ``k[r]`` cheapest columns of every row of exact costs, with the official tie-break.

    Args:
        cost: ``[R, W]`` with +inf padding; k, count: ``[R]``.

    Returns:
        (row, position) pairs of all selections.
    """
    kk = min(int(k.max()) + 1, cost.shape[1])
    vals, pos = cost.topk(kk, dim=1, largest=False)
    has_next = k < count
    nxt = k.clamp(max=kk - 1)
    last = vals.gather(1, (k - 1)[:, None]).squeeze(1)
    # redo with the official call where the k-th place ties, or reaches inf / NaN costs (or the +inf padding)
    tie = (has_next & (last == vals.gather(1, nxt[:, None]).squeeze(1))) | ~torch.isfinite(last)
    take = (torch.arange(kk, device=cost.device) < k[:, None]) & ~tie[:, None]
    sel_row, sel_rank = torch.nonzero(take, as_tuple=True)
    rows, cols = [sel_row], [pos[sel_row, sel_rank]]
    for r in torch.nonzero(tie).flatten().tolist():
        # a tie across the k-th place (duplicate cells): the official call, topk over exactly this box's row
        chosen = torch.topk(cost[r, : int(count[r])], int(k[r]), largest=False).indices
        rows.append(torch.full_like(chosen, r))
        cols.append(chosen)
    return torch.cat(rows), torch.cat(cols)


def _cheapest_rows(rows: _Rows, cols: Tensor) -> Tensor:
    """For each contested column, the first row of its image with the minimal exact cost (``torch.min`` rule).

    Columns are processed in groups of at most ``max_elements / _WORDS_PER_CELL`` (row, column) pairs.
    """
    owner = torch.empty_like(cols)
    pairs = torch.cumsum(rows.per_image[rows.table.image[cols]], 0)
    budget = max(1, rows.max_elements // _WORDS_PER_CELL)
    lo = 0
    while lo < len(cols):
        done = int(pairs[lo - 1]) if lo else 0
        hi = max(lo + 1, int(torch.searchsorted(pairs, done + budget, right=True)))
        part = cols[lo:hi]
        q, row, cost = rows.exact_column_costs(part)
        cost = cost.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))  # torch.min: 1st NaN
        best = torch.full((len(part),), float("inf"), device=cols.device).scatter_reduce(0, q, cost, "amin")
        at_best = cost == best[q]
        big = torch.iinfo(torch.long).max
        owner[lo:hi] = torch.full_like(part, big).scatter_reduce(0, q[at_best], row[at_best], "amin")
        lo = hi
    return owner


def _keep_matrices(
    out: list[ImageMatrices], iou: Tensor, cost: Tensor, k: Tensor, selected: Tensor, rows: _Rows, lo: int, hi: int
) -> None:
    """Append the per-image pieces of one chunk (an image split over chunks is merged by ``_merge_matrices``)."""
    image = rows.image[lo:hi]
    for img in torch.unique_consecutive(image).tolist():
        m = image == img
        c = int(rows.table.count[img])
        s = int(rows.table.start[img])
        t = rows.table
        out.append(
            ImageMatrices(
                img,
                rows.target[lo:hi][m],
                t.level[s : s + c],
                t.index[s : s + c],
                iou[m, :c],
                cost[m, :c],
                k[m],
                selected[m, :c],
            )
        )


def _merge_matrices(out: list[ImageMatrices]) -> None:
    """Merge consecutive pieces of the same image, in place."""
    merged: list[ImageMatrices] = []
    for piece in out:
        if merged and merged[-1].image == piece.image:
            last = merged[-1]
            last.gt = torch.cat((last.gt, piece.gt))
            last.iou = torch.cat((last.iou, piece.iou))
            last.cost = torch.cat((last.cost, piece.cost))
            last.dynamic_k = torch.cat((last.dynamic_k, piece.dynamic_k))
            last.selected = torch.cat((last.selected, piece.selected))
        else:
            merged.append(piece)
    out[:] = merged
