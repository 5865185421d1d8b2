"""Cell wiring shared by the SuperNet and the discrete Network: stem, cell DAG, reductions, TSN consensus."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from autovid.nas.fused import shared_relu
from autovid.nas.ops import FactorizedReduce, PreActOp, ReLUConvBN, conv_stack
from autovid.nas.search_space import SearchSpace

CONSENSUS: tuple[str, ...] = ("avg", "max")


class CellLayout(NamedTuple):
    """The edges of one cell type, as ``(node, input_index)`` pairs in build order, and its output states."""

    edges: tuple[tuple[int, int], ...]
    concat: tuple[int, ...]


# (cell_type, edge_index, C, stride, temporal_stride) -> edge module. Edge modules are called as
# ``edge(x, arg, cache)``: x the input state, arg the per-edge argument handed to Cell.forward (α row, op
# index, drop path), cache a dict shared by every edge reading the same state in this forward (see
# ``shared_relu``). They return a tensor or Terms. An edge may define ``share_from(other_edge)``: the cell
# calls it with the first edge reading the same input, so that parameter-free work can be shared.
EdgeBuilder = Callable[[str, int, int, int, int], nn.Module]
# A node's sum over its edges' outputs: ``plain_sum``, or the fused path's ``fused.fused_node_sum`` for edges
# that return Terms (chosen with the mixed op, see ``supernet.MIXED_OPS``).
NodeSum = Callable[[Iterable[Any]], torch.Tensor]


def plain_sum(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """``y_0 + y_1 + ...`` in edge order (no ``0 +`` first, as the builtin ``sum`` would add)."""
    return functools.reduce(operator.add, outputs)


def tsn_consensus(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """TSN's segmental consensus, for the NAS networks and the hand-designed ones alike: the [B, K, N] logits
    of K segments pooled to [B, N] by their mean (``avg``) or maximum (``max``)."""
    return logits.mean(1) if kind == "avg" else logits.amax(1)


def reduction_positions(cells: int) -> tuple[int, ...]:
    """Indices of the reductions, at 1/3 and 2/3 of the depth (DARTS); none before the first cell."""
    return tuple(sorted({i for i in (cells // 3, 2 * cells // 3) if i > 0}))


class Cell(nn.Module):
    """One module (1 input) or DARTS cell (2 inputs): a DAG of ``nodes`` nodes, each the sum of its edges.

    ::

        s0 ─pre0─┐                       (cell only)
        s1 ─pre1─┤→ states ─edges→ n0 ─→ n1 ─→ ... ─→ concat(nodes) ─(module: ReLU-Conv1-BN → C)→ out
                                 (node i = Σ edge(state j) over its incoming edges j)

    The edges are modules built by an EdgeBuilder (mixed ops for the supernet, single ops for the discrete
    network), summed per node by ``node_sum``. ``relu(state)`` is computed once per state and shared by every ReLU-first
    op reading it, and edges may share parameter-free work on the same state (``share_from``).
    """

    def __init__(
        self,
        *,
        cell_type: str,
        topology: str,
        nodes: int,
        layout: CellLayout,
        c_pp: int,
        c_p: int,
        c: int,
        kernel: str,
        reduction: bool,
        reduction_prev: bool,
        temporal_stride: int,
        prev_temporal_stride: int,
        build_edge: EdgeBuilder,
        node_sum: NodeSum = plain_sum,
    ) -> None:
        super().__init__()
        self.cell_type = cell_type
        self.node_sum = node_sum
        self.topology = topology
        self.nodes = nodes
        self.num_inputs = 1 if topology == "module" else 2
        self.concat = tuple(layout.concat)
        self.edge_input = tuple(j for _, j in layout.edges)
        self.node_edges = tuple(tuple(e for e, (n, _) in enumerate(layout.edges) if n == node) for node in range(nodes))
        if topology == "cell":
            self.pre0: nn.Module = (
                FactorizedReduce(c_pp, c, temporal_stride=prev_temporal_stride)
                if reduction_prev
                else ReLUConvBN(c_pp, c, 1, kernel=kernel)
            )
            self.pre1: nn.Module = ReLUConvBN(c_p, c, 1, kernel=kernel)
            self.post: nn.Module = nn.Identity()
            self.out_channels = len(self.concat) * c
        else:
            self.pre0 = nn.Identity()
            self.pre1 = nn.Identity() if c_p == c else ReLUConvBN(c_p, c, 1, kernel=kernel)
            self.post = ReLUConvBN(len(self.concat) * c, c, 1, kernel=kernel)
            self.out_channels = c
        edges = []
        for e, (_, j) in enumerate(layout.edges):
            stride = 2 if reduction and j < self.num_inputs else 1
            ts = temporal_stride if stride == 2 else 1
            edges.append(build_edge(cell_type, e, c, stride, ts))
        self.edges = nn.ModuleList(edges)
        first_reader: dict[int, nn.Module] = {}
        for e, edge in enumerate(edges):
            j = self.edge_input[e]
            share_from = getattr(edge, "share_from", None)
            if j in first_reader and share_from is not None:
                share_from(first_reader[j])
            first_reader.setdefault(j, edge)

    def forward(
        self,
        s0: torch.Tensor,
        s1: torch.Tensor,
        *,
        caches: tuple[dict[Any, torch.Tensor], dict[Any, torch.Tensor]] | None = None,
        edge_args: Sequence[Any] | None = None,
        active: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """``caches`` are the per-state caches of s0 and s1 (shared with the other cell reading them);
        ``edge_args[e]`` is passed to edge e; ``active[i]`` restricts node i to some edges (single path)."""
        states, state_caches = self._inputs(s0, s1, caches)
        args = edge_args if edge_args is not None else [None] * len(self.edges)
        for edges in active if active is not None else self.node_edges:
            incoming = [(e, self.edge_input[e]) for e in edges]  # (edge, the state it reads)
            # node i = Σ_j edge_ij(state j), as DARTS writes it (node_sum: a plain sum, or the fused pass)
            states.append(self.node_sum(self.edges[e](states[j], args[e], state_caches[j]) for e, j in incoming))
        return self.post(torch.cat([states[i] for i in self.concat], dim=1))

    def _inputs(
        self, s0: torch.Tensor, s1: torch.Tensor, caches: tuple[dict[Any, torch.Tensor], dict[Any, torch.Tensor]] | None
    ) -> tuple[list[torch.Tensor], list[dict[Any, torch.Tensor]]]:
        """The preprocessed cell inputs (a module reads only s1), and an empty cache for every state."""
        c0, c1 = caches if caches is not None else ({}, {})
        pairs = [(self.pre1, s1, c1)] if self.topology == "module" else [(self.pre0, s0, c0), (self.pre1, s1, c1)]
        states = [_preprocess(module, s, cache) for module, s, cache in pairs]
        return states, [{} for _ in range(len(states) + self.nodes)]


class ReductionBlock(nn.Module):
    """The fixed reduction between modules (module topology): ReLU → k=3 conv (space's kernel style),
    stride 2 in H and W (and T when the space reduces time) → BN, doubling the channels."""

    cell_type = "block"

    def __init__(self, c_in: int, c_out: int, *, kernel: str, temporal_stride: int) -> None:
        super().__init__()
        self.op = ReLUConvBN(c_in, c_out, 3, kernel=kernel, stride=2, temporal_stride=temporal_stride)
        self.out_channels = c_out

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.op(s1)


def _preprocess(module: nn.Module, s: torch.Tensor, cache: dict[Any, torch.Tensor]) -> torch.Tensor:
    """A cell's input preprocessing, reading relu(s) from the state's cache when it starts with ReLU."""
    if isinstance(module, PreActOp):
        return module.forward_preact(shared_relu(s, s.shape[1], cache))
    return module(s)


def make_stem(c_out: int, *, kernel: str, stride: int = 1, c_in: int = 3) -> nn.Sequential:
    """k=3 convolution(s) in the space's kernel style (so the spatial-only control stays spatial-only) + BN."""
    return nn.Sequential(*conv_stack(c_in, c_out, 3, kernel=kernel, stride=stride), nn.BatchNorm3d(c_out))


class VideoNet(nn.Module):
    """Stem → cells (with reductions) → global pool → classifier, applied per segment with TSN consensus.

    ::

        x [B, K, C, L, H, W] ─fold K→ [B·K, C, L, H, W] ─stem→ cells ─avgpool→ linear → [B·K, N]
                             ─unfold→ [B, K, N] ─consensus (mean | max over K)→ [B, N]

    - stem: a k=3 convolution in the space's kernel style (P3D 1×3×3 then 3×1×1 for p3d, so that p2d stays
      spatial-only), ``stem_multiplier·channels`` wide, spatial stride ``stem_stride``, then BN; with
      ``fixed_kernel="p2d"`` the stem and the fixed reduction blocks are spatial-only whatever the space, so
      time is mixed only inside searched operators;
    - cell topology (DARTS): reduction cells at ``cells//3`` and ``2·cells//3`` halve H, W (and T when the
      space says so) and double the channels; each cell reads the two previous outputs;
    - module topology (the paper): ``cells`` searched modules; before the modules at those same positions a
      fixed ReductionBlock (ReLU, stride-2 k=3 conv in the space's style, BN) halves H, W (T) and doubles
      the channels; each module reads the previous output (1×1×1 ReLU-Conv-BN to C when widths differ).

    Shared by SuperNet and Network: they differ only in the edge modules (``build_edge``) and how a node sums
    them (``node_sum``), the layouts and the per-forward cell arguments (``_cell_args``).
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        num_classes: int,
        channels: int,
        cells: int,
        layouts: dict[str, CellLayout],
        build_edge: EdgeBuilder,
        node_sum: NodeSum = plain_sum,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        consensus: str = "avg",
        fixed_kernel: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if consensus not in CONSENSUS:
            raise ValueError(f"consensus must be one of {CONSENSUS}, got {consensus!r}")
        if cells < 1 or channels < 1 or num_classes < 1:
            raise ValueError(f"cells, channels, num_classes must be positive: {cells}, {channels}, {num_classes}")
        self.space = space
        self.num_classes = num_classes
        self.consensus = consensus
        # None = by device: NDHWC on CPU, where with the 2D-view convolutions of ops.conv3d_views search steps
        # run ~2x faster than on NCDHW; NCDHW on CUDA, ~1.35x faster there in fp32 (benchmarks/search_step.py).
        self.memory_format: torch.memory_format | None = None
        ts = 2 if space.reduce_temporal else 1
        reductions = reduction_positions(cells)
        # the layers nobody searches (stem, fixed reductions): in the space's style, or p2d so that every
        # temporal interaction in the network is one the search put there (model.temporal_mixing=searched)
        fixed = fixed_kernel or space.kernel
        self.fixed_kernel = fixed
        # With a generator, subclasses redraw the default initializations from it after this constructor (see
        # init_weights): building under fork_rng keeps the global RNG untouched.
        with torch.random.fork_rng(devices=[]) if generator is not None else contextlib.nullcontext():
            c_stem = stem_multiplier * channels
            self.stem = make_stem(c_stem, kernel=fixed, stride=stem_stride)
            blocks: list[nn.Module] = []
            if space.topology == "module":
                c_prev, c = c_stem, channels
                for i in range(cells):
                    if i in reductions:
                        blocks.append(ReductionBlock(c_prev, 2 * c, kernel=fixed, temporal_stride=ts))
                        c = c_prev = 2 * c
                    cell = Cell(
                        cell_type="normal",
                        topology="module",
                        nodes=space.nodes,
                        layout=layouts["normal"],
                        c_pp=c_prev,
                        c_p=c_prev,
                        c=c,
                        kernel=space.kernel,
                        reduction=False,
                        reduction_prev=False,
                        temporal_stride=1,
                        prev_temporal_stride=1,
                        build_edge=build_edge,
                        node_sum=node_sum,
                    )
                    blocks.append(cell)
                    c_prev = cell.out_channels
            else:
                c_pp, c_prev, c = c_stem, c_stem, channels
                reduction_prev = False
                for i in range(cells):
                    reduction = i in reductions
                    if reduction:
                        c *= 2
                    cell_type = "reduce" if reduction else "normal"
                    cell = Cell(cell_type=cell_type, topology="cell", nodes=space.nodes, layout=layouts[cell_type],
                                c_pp=c_pp, c_p=c_prev, c=c, kernel=space.kernel, reduction=reduction,
                                reduction_prev=reduction_prev, temporal_stride=ts, prev_temporal_stride=ts,
                                build_edge=build_edge, node_sum=node_sum)
                    blocks.append(cell)
                    c_pp, c_prev, reduction_prev = c_prev, cell.out_channels, reduction
            self.cells = nn.ModuleList(blocks)
            self.global_pool = nn.AdaptiveAvgPool3d(1)
            self.classifier = nn.Linear(c_prev, num_classes)

    def _cell_args(self) -> dict[str, dict[str, Any]]:
        """Keyword arguments of Cell.forward per cell type, computed once per forward."""
        return {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, T, H, W] clips → [N, C_last] pooled features."""
        fmt = self.memory_format
        if fmt is None:
            fmt = torch.channels_last_3d if x.device.type == "cpu" else torch.contiguous_format
        x = x.contiguous(memory_format=fmt)
        s0 = s1 = self.stem(x)
        # per-state caches: relu(cell output) is shared by the next two cells' preprocessing
        c0: dict[Any, torch.Tensor] = {}
        c1 = c0
        args = self._cell_args()
        for cell in self.cells:
            cell_args = args.get(cast(str, cell.cell_type), {})
            s0, s1, c0, c1 = s1, cell(s0, s1, caches=(c0, c1), **cell_args), c1, {}
        return self.global_pool(s1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, C, L, H, W] → [B, num_classes] (segment logits averaged, or max-ed, over K)."""
        if x.dim() != 6:
            raise ValueError(f"expected a clip batch [B, K, C, L, H, W], got shape {tuple(x.shape)}")
        b, k = x.shape[:2]
        logits = self.classifier(self.features(x.flatten(0, 1)))  # [B·K, N]
        return tsn_consensus(logits.view(b, k, logits.shape[-1]), self.consensus)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy of the consensus logits."""
        return F.cross_entropy(self(x), y)

    def set_memory_format(self, memory_format: torch.memory_format | None) -> VideoNet:
        """Run on ``torch.channels_last_3d`` (NDHWC) or ``torch.contiguous_format`` (NCDHW) activations;
        ``None`` (the default) picks by device: NDHWC on CPU, NCDHW on CUDA."""
        if memory_format not in (None, torch.contiguous_format, torch.channels_last_3d):
            raise ValueError(f"memory_format must be None, contiguous_format or channels_last_3d, got {memory_format}")
        self.memory_format = memory_format
        return self


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw conv and linear weights from ``generator`` with PyTorch's default distributions
    (kaiming-uniform, a=√5), so that a seed fixes the network without touching the global RNG."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    fan_in = m.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    m.bias.uniform_(-bound, bound, generator=generator)
