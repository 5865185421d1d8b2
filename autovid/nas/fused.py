"""The supernet's fast path: the DARTS mixed op computed with less work, and the fused node sum.

Every function here computes exactly what `supernet.ReferenceMixedOp` and a plain ``sum`` compute (tests
prove it in float64, gradients included); it only does less work on CPU:

- ``FusedMixedOp`` skips the zero op, shares ``relu(state)`` and the pools between the edges reading a state,
  and folds each ReLU-first op's α weight into its last BatchNorm;
- ``Terms`` / ``fused_node_sum`` / ``fused_sum`` add a node's weighted terms in place in one pass, with
  dot-product gradients (the cell's node sum when the supernet's mixed op is fused);
- ``channel_shuffle_merge`` does PC-DARTS' concatenation and channel shuffle in a single copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from autovid.nas.ops import PreActOp, bypass_path, edge_ops, partial_channels


class Terms(NamedTuple):
    """An edge's contribution as terms the cell sums over the whole node in one fused pass (``fused_sum``).

    Plain: ``Σ units + Σ weights[i] · tensors[i]`` — units are op outputs already scaled by their α weight
    (folded into their last BatchNorm), tensors the outputs shared between edges or weight-free (skip,
    pools). Partial channels (PC-DARTS, ``groups`` = pc_k > 1): the edge is ``channel_shuffle_merge(<plain
    sum>, Σ bypass_weights[i] · bypass[i], groups)``; shuffle and concatenation are linear and the same for
    every edge of a node, so the cell sums the processed parts and the bypass parts of all edges first and
    merges once per node instead of once per edge.
    """

    units: list[torch.Tensor]
    tensors: list[torch.Tensor]
    weights: torch.Tensor  # [len(tensors)]
    bypass: list[torch.Tensor] | None = None
    bypass_weights: torch.Tensor | None = None  # [len(bypass)]
    groups: int = 1


def channel_shuffle_merge(processed: torch.Tensor, bypass: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(cat([processed, bypass], 1), groups)`` of PC-DARTS in a single copy.

    The shuffle sends channel ``g·(C/groups) + j`` to ``j·groups + g``: stacking the ``groups`` chunks on a new
    axis right after the channel axis and flattening does exactly that. On NDHWC input the stack is done in
    memory order (channels last) so that the result stays channels_last_3d.
    """
    parts = [processed, *bypass.chunk(groups - 1, dim=1)]
    if processed.dim() == 5 and processed.is_contiguous(memory_format=torch.channels_last_3d):
        merged = torch.stack([p.permute(0, 2, 3, 4, 1) for p in parts], dim=-1).flatten(-2)  # [N, T, H, W, C]
        return merged.permute(0, 4, 1, 2, 3)
    return torch.stack(parts, dim=2).flatten(1, 2)


def shared_relu(x: torch.Tensor, channels: int, cache: dict[Any, torch.Tensor]) -> torch.Tensor:
    """``relu(x[:, :channels])``, computed once per state and forward for all edges reading that state.

    Every ReLU-first operator on every edge fed by a state would otherwise compute and keep (for backward)
    its own copy: ~16 per state in a DARTS cell. Exact: ReLU is deterministic and not in place.
    """
    key = ("relu", channels)
    out = cache.get(key)
    if out is None:
        out = cache[key] = F.relu(x if channels == x.shape[1] else x[:, :channels])
    return out


def _layout(t: torch.Tensor) -> torch.memory_format:
    """channels_last_3d for a dense NDHWC tensor, else contiguous_format."""
    if t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A 1D view of a dense tensor in memory order (NCDHW or NDHWC), or None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return t.permute(0, 2, 3, 4, 1).reshape(-1)
    return None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ a·b in one pass without a temporary when both share a dense layout and dtype."""
    if a.stride() == b.stride() and a.dtype == b.dtype:
        fa, fb = _flat(a), _flat(b)
        if fa is not None and fb is not None:
            return torch.dot(fa, fb)
    return (a * b).sum()


class _FusedSum(torch.autograd.Function):
    """``Σ units + Σ_i w[i] · ys[i]`` accumulated in place into one buffer (one pass per term instead of a
    product and a sum each); backward: every unit gets ``g`` itself, ``∂ys[i] = w[i] · g`` and
    ``∂w[i] = <g, ys[i]>`` as dot products (no temporaries)."""

    @staticmethod
    def forward(ctx: Any, n_units: int, w: torch.Tensor, *terms: torch.Tensor) -> torch.Tensor:
        units, ys = terms[:n_units], terms[n_units:]
        if len(units) >= 2:
            out, rest = torch.add(units[0], units[1]), units[2:]
        elif units:
            out, rest = units[0].clone(), ()
        else:
            out, rest = ys[0] * w[0], ()
        for u in rest:
            out.add_(u)
        for i in range(0 if units else 1, len(ys)):
            out.addcmul_(ys[i], w[i])
        ctx.n_units = n_units
        ctx.dtypes = [t.dtype for t in terms]  # autocast may mix bf16 and fp32 terms
        ctx.layout = _layout(out)
        ctx.save_for_backward(w, *ys)
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        w, *ys = ctx.saved_tensors
        n = ctx.n_units
        if not g.is_contiguous(memory_format=ctx.layout):
            # e.g. a channel slice of the concatenation's gradient: densify once here rather than let every
            # consumer (BN backward kernels, dot products) fall back to slow strided paths.
            g = g.contiguous(memory_format=ctx.layout)
        dt = ctx.dtypes
        grad_w = torch.stack([_dot(g, y) for y in ys]).to(w.dtype) if ctx.needs_input_grad[1] and ys else None
        grad_units = [g.to(dt[i]) if ctx.needs_input_grad[2 + i] else None for i in range(n)]
        grad_ys = [(g * w[i]).to(dt[n + i]) if ctx.needs_input_grad[2 + n + i] else None for i in range(len(ys))]
        return (None, grad_w, *grad_units, *grad_ys)


def fused_sum(
    units: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor] = (), weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ units + Σ weights[i] · tensors[i]`` (all the same shape) through ``_FusedSum``."""
    if tensors and (weights is None or len(tensors) != weights.shape[0]):
        raise ValueError(f"{len(tensors)} weighted tensors need as many weights")
    if not units and not tensors:
        raise ValueError("nothing to sum")
    if len(units) == 1 and not tensors:
        return units[0]
    w = weights if weights is not None else torch.zeros(0, device=(units or tensors)[0].device)
    return _FusedSum.apply(len(units), w, *units, *tensors)


def fused_node_sum(outputs: Iterable[torch.Tensor | Terms]) -> torch.Tensor:
    """A node's ``Σ edge outputs`` when its edges are ``FusedMixedOp``s: the ``Terms`` of every edge gathered
    and added in one ``fused_sum`` pass (PC-DARTS: processed parts and bypasses summed, then merged once per
    node), plain tensors (single-path edges) added as they come. Equal to ``cells.plain_sum`` of the
    reference mixed op's outputs."""
    total: torch.Tensor | None = None
    units: list[torch.Tensor] = []
    tensors: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    bypass: list[torch.Tensor] = []
    bypass_weights: list[torch.Tensor] = []
    groups = 1
    for y in outputs:
        if not isinstance(y, Terms):
            total = y if total is None else total + y
            continue
        units.extend(y.units)
        if y.tensors:
            tensors.extend(y.tensors)
            weights.append(y.weights)
        if y.bypass is not None and y.bypass_weights is not None:
            bypass.extend(y.bypass)
            bypass_weights.append(y.bypass_weights)
            groups = y.groups
    if units or tensors:
        summed = fused_sum(units, tensors, torch.cat(weights) if weights else None)
        if bypass:
            summed = channel_shuffle_merge(summed, fused_sum([], bypass, torch.cat(bypass_weights)), groups)
        total = summed if total is None else total + summed
    if total is None:
        raise ValueError("a node needs at least one incoming edge")
    return total


class FusedMixedOp(nn.Module):
    """One supernet edge: ``Σ_o softmax(α)_o · op_o(x)`` over the space's operators.

    Exact, but computed with less work than the quark0/darts MixedOp:

    - the zero op is not run at all: its term is ``w·0 = 0`` exactly (its weight still takes part in the
      softmax through α);
    - ReLU-first ops read ``relu(x)`` computed once per state (``cells.shared_relu``);
    - each ReLU-first op's weight is folded into its final BN as γ (``ops.batch_norm``), so ``w·y`` and
      ``w·∂y`` are never materialized;
    - pools (+ their non-affine BN, as in DARTS) are shared by all edges reading the same state
      (``share_from``), and computed once;
    - the outputs go back as ``Terms``, summed by the cell over the whole node in one fused pass.

    With ``pc_k > 1`` (PC-DARTS) only the first C/pc_k channels go through the operators; the rest bypass
    them (max-pooled on reducing edges), the two parts are channel-shuffled back together, and the edge is
    weighted by its normalized β.
    """

    def __init__(
        self, ops: tuple[str, ...], C: int, stride: int, temporal_stride: int, *, kernel: str, pc_k: int = 1
    ) -> None:
        super().__init__()
        self.pc_k = pc_k
        self.channels = partial_channels(C, pc_k)
        self.stride, self.temporal_stride = stride, temporal_stride
        self.num_ops = len(ops)
        index = [i for i, name in enumerate(ops) if name != "zero"]
        self.ops = edge_ops(ops, self.channels, stride, temporal_stride, kernel)
        preact = [isinstance(op, PreActOp) for op in self.ops]
        self.op_index = tuple(index)  # position in the α row of each module in self.ops
        self.register_buffer("_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.preact = tuple(preact)
        self.shareable = frozenset(k for k, i in enumerate(index) if "pool" in ops[i])
        self._slot = {i: k for k, i in enumerate(index)}
        self.bypass = bypass_path(stride, temporal_stride, pc_k)

    def share_from(self, other: FusedMixedOp) -> None:
        """Use ``other``'s pooling modules (pool + non-affine BN: no parameters, deterministic): edges reading
        the same state then compute each pooling once per forward (see ``_run``), BN running statistics
        included. Exact, since those edges see the same input with the same strides."""
        if other.op_index != self.op_index or other.channels != self.channels:
            raise ValueError("can only share with a FusedMixedOp over the same operators and channels")
        for k in self.shareable:
            self.ops[k] = other.ops[k]

    def _run(
        self,
        k: int,
        xp: torch.Tensor,
        x: torch.Tensor,
        cache: dict[Any, torch.Tensor],
        scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        op = self.ops[k]
        if self.preact[k]:
            return cast(PreActOp, op).forward_preact(shared_relu(x, self.channels, cache), scale)
        if k not in self.shareable:
            return op(xp)
        key = id(op)
        if key not in cache:
            cache[key] = op(xp)
        return cache[key]

    def forward(self, x: torch.Tensor, arg: Any, cache: dict[Any, torch.Tensor]) -> torch.Tensor | Terms:
        """``arg``: this edge's softmax(α) row [num_ops] (PC-DARTS: ``(row, edge_weight)``), or an op
        index (single-path mode, unweighted). ``cache`` is shared by the edges reading the same state.

        ReLU-first ops (the convolutions, and skip on reducing edges) get their weight folded into their
        last BN and come back as units; pools (shared between edges) and identity skips as weighted terms.
        """
        xp = x if self.pc_k == 1 else self._part(x, "head", cache)
        if isinstance(arg, int):
            out = self._run(self._slot[arg], xp, x, cache)
            if self.pc_k == 1:
                return out
            return channel_shuffle_merge(out, self._bypass(x, cache), self.pc_k)
        row, beta = arg if isinstance(arg, tuple) else (arg, None)
        w = row.index_select(0, self._index)
        if beta is not None:
            w = w * beta  # PC-DARTS edge: β · shuffle(cat(Σ w·op(x_part), bypass)), merged per node by the cell
        units, tensors, weights = [], [], []
        for k in range(len(self.ops)):
            if self.preact[k]:
                units.append(self._run(k, xp, x, cache, w[k]))
            else:
                tensors.append(self._run(k, xp, x, cache))
                weights.append(k)
        tw = w[weights] if len(weights) < len(self.ops) else w
        if beta is None:
            return Terms(units, tensors, tw)
        return Terms(units, tensors, tw, [self._bypass(x, cache)], beta.reshape(1), self.pc_k)

    def _bypass(self, x: torch.Tensor, cache: dict[Any, torch.Tensor]) -> torch.Tensor:
        """The channels that skip the operators (max-pooled on reducing edges), once per state."""
        key = ("bypass", self.channels, self.stride, self.temporal_stride)
        if key not in cache:
            cache[key] = self.bypass(self._part(x, "tail", cache))
        return cache[key]

    def _part(self, x: torch.Tensor, part: str, cache: dict[Any, torch.Tensor]) -> torch.Tensor:
        """``x[:, :C/pc_k]`` or ``x[:, C/pc_k:]``, one view per state shared by the edges reading it: their
        gradients then add up at the part's size and the slice's backward pads them to the state's size once,
        not once per edge."""
        key = (part, self.channels)
        if key not in cache:
            cache[key] = x[:, : self.channels] if part == "head" else x[:, self.channels :]
        return cache[key]
