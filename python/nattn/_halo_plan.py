"""Halo geometry of multi-device NA (issue 6): key ranges of query slabs, slab layouts, and the
per-rank plan of distributed_na (what a rank sends, receives and computes). Pure functions of the
arguments (no communication); nattn.distributed re-exports the public ones."""

import functools
import math

import numpy as np

from . import _args
from ._lib import require_lib


# ---- halos ---------------------------------------------------------------------------------------


def halo_range(q_lo, q_hi, extent, kernel_size, stride=1, dilation=1, is_causal=False):
    """(kv_lo, kv_hi): the smallest global key range holding every window of the global queries
    [q_lo, q_hi) of one axis of extent `extent` (all dilation groups)."""
    lo, hi = require_lib().halo_range(int(q_lo), int(q_hi), int(extent), int(kernel_size), int(stride),
                                      int(dilation), bool(is_causal))
    return int(lo), int(hi)


def halo_box(q_lo, q_hi, global_shape, kernel_size, stride=1, dilation=1, is_causal=False):
    """Per-axis halo_range of the query box [q_lo, q_hi): returns (kv_lo, kv_hi) tuples."""
    n = len(global_shape)
    ks, st, dil, causal = _args.normalize_na_params(n, kernel_size, stride, dilation, is_causal)
    ranges = [halo_range(q_lo[i], q_hi[i], global_shape[i], ks[i], st[i], dil[i], causal[i]) for i in range(n)]
    return tuple(r[0] for r in ranges), tuple(r[1] for r in ranges)


def slabs(sizes):
    """[(lo, hi), ...] of consecutive slabs of the given sizes."""
    out, at = [], 0
    for s in sizes:
        if int(s) < 0:
            raise ValueError(f"slab sizes must be >= 0 (got {list(sizes)})")
        out.append((at, at + int(s)))
        at += int(s)
    return out


def even_slabs(extent, parts):
    """Slab sizes splitting `extent` tokens into `parts` slabs as evenly as possible (the first
    extent % parts slabs one token larger)."""
    extent, parts = int(extent), int(parts)
    if parts < 1 or extent < parts:
        raise ValueError(f"even_slabs: cannot split extent={extent} into parts={parts} slabs of >= 1 token")
    return [extent // parts + (1 if i < extent % parts else 0) for i in range(parts)]



# ---- the plan of a rank ----------------------------------------------------------------------------
#
# Boxes are tuples of (lo, hi) per spatial axis in global coordinates. A rank's slab is the product of
# its slabs along the split axes (whole along the others); its halo box is halo_range of the slab
# along the split axes (whole along the others). The halo box minus the slab is received from the ranks
# whose slabs intersect it (diagonal neighbours and ranks further away included).


def _intersect(a, b):
    box = tuple((max(x[0], y[0]), min(x[1], y[1])) for x, y in zip(a, b))
    return box if all(lo < hi for lo, hi in box) else None


def _box_shape(box):
    return tuple(hi - lo for lo, hi in box)


def _sl(box, origin):
    """Index of `box` in a [B, *spatial, H, D] tensor holding the global tokens origin + [0, ...)."""
    return (slice(None),) + tuple(slice(lo - o[0], hi - o[0]) for (lo, hi), o in zip(box, origin))


def _interior(lo, hi, extent, k, s, d, causal):
    """The longest run [a, b) of queries of [lo, hi) whose windows lie inside [lo, hi) (one axis)."""
    best, start = (lo, lo), None
    for x in range(lo, hi + 1):
        ok = False
        if x < hi:
            a, b = halo_range(x, x + 1, extent, k, s, d, causal)
            ok = lo <= a and b <= hi
        if ok and start is None:
            start = x
        elif not ok and start is not None:
            if x - start > best[1] - best[0]:
                best = (start, x)
            start = None
    return best


class _Plan:
    """What one rank sends, receives and computes (pure function of the arguments; see _make_plan)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@functools.lru_cache(maxsize=256)
def _make_plan(global_shape, axes, sizes, rank, params, overlap):
    ks, st, dil, causal = params
    grid = tuple(len(s) for s in sizes)
    bounds = [slabs(s) for s in sizes]
    world = math.prod(grid)

    def slab_of(r):
        box = [(0, x) for x in global_shape]
        for j, c in enumerate(np.unravel_index(r, grid)):
            box[axes[j]] = bounds[j][int(c)]
        return tuple(box)

    def halo_of(box):
        h = list(box)
        for ax in axes:
            h[ax] = halo_range(box[ax][0], box[ax][1], global_shape[ax], ks[ax], st[ax], dil[ax], causal[ax])
        return tuple(h)

    slab_boxes = [slab_of(r) for r in range(world)]
    halos = [halo_of(b) for b in slab_boxes]
    slab, halo = slab_boxes[rank], halos[rank]
    sends = [(d, b) for d in range(world) if d != rank for b in [_intersect(slab, halos[d])] if b]
    recvs = [(s, b) for s in range(world) if s != rank for b in [_intersect(slab_boxes[s], halo)] if b]
    inner = list(slab)
    for ax in axes:
        inner[ax] = _interior(slab[ax][0], slab[ax][1], global_shape[ax], ks[ax], st[ax], dil[ax], causal[ax])
    interior, boundary = None, [slab]
    if overlap and all(lo < hi for lo, hi in inner):
        # Onion split: along each split axis in turn, the low and high parts outside the interior.
        interior, boundary, cur = tuple(inner), [], list(slab)
        for ax in axes:
            for part in ((slab[ax][0], inner[ax][0]), (inner[ax][1], slab[ax][1])):
                if part[0] < part[1]:
                    boundary.append(tuple(part if i == ax else cur[i] for i in range(len(cur))))
            cur[ax] = inner[ax]
    boundary_kv = [halo_of(b) for b in boundary]
    return _Plan(global_shape=global_shape, axes=axes, grid=grid, rank=rank,
                 coords=tuple(int(c) for c in np.unravel_index(rank, grid)), slab=slab, halo=halo,
                 own=_intersect(slab, halo), sends=sends, recvs=recvs, interior=interior, boundary=boundary,
                 boundary_kv=boundary_kv)
