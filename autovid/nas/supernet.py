"""The DARTS supernet over a video search space: mixed ops, α (and PC-DARTS β), derive, single-path mode.

Read ``ReferenceMixedOp`` first: it is DARTS' mixed operation as in the reference implementation. The
supernet uses it, or the exact same computation done with less work (``nas/fused.py``), by ``mixed_op``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from autovid.errors import UserError
from autovid.nas.cells import CellLayout, NodeSum, VideoNet, init_weights, plain_sum
from autovid.nas.fused import FusedMixedOp, channel_shuffle_merge, fused_node_sum
from autovid.nas.genotype import Genotype, derive_genotype, num_cell_inputs
from autovid.nas.ops import bypass_path, edge_ops, partial_channels
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace

__all__ = ["FusedMixedOp", "MixedOpKind", "ReferenceMixedOp", "SuperNet", "channel_shuffle_merge", "sample_genotype"]

MixedOpKind = Literal["reference", "fused"]


class ReferenceMixedOp(nn.Module):
    """DARTS' mixed operation, ``Σ_o softmax(α)_o · op_o(x)``, as quark0/darts writes it.

    With PC-DARTS (``pc_k > 1``) only the first C/pc_k channels go through the operators, the rest bypass
    them (max-pooled on reducing edges), the two are concatenated and channel-shuffled, and the edge is
    weighted by its normalized β. Same modules and parameter names as ``FusedMixedOp``: the two load each
    other's state dicts.
    """

    def __init__(
        self, ops: tuple[str, ...], C: int, stride: int, temporal_stride: int, *, kernel: str, pc_k: int = 1
    ) -> None:
        super().__init__()
        self.pc_k, self.channels = pc_k, partial_channels(C, pc_k)
        self.op_index = tuple(i for i, name in enumerate(ops) if name != "zero")  # α column of each module
        self.ops = edge_ops(ops, self.channels, stride, temporal_stride, kernel)
        self.bypass = bypass_path(stride, temporal_stride, pc_k)

    def forward(self, x: torch.Tensor, arg: Any, cache: dict[Any, torch.Tensor] | None = None) -> torch.Tensor:
        """``arg``: the edge's softmax(α) row (PC-DARTS: ``(row, β weight)``), or one op index (single path)."""
        xp = x[:, : self.channels]
        if isinstance(arg, int):  # single-path mode: the chosen op alone, unweighted
            out = self.ops[self.op_index.index(arg)](xp)
            return out if self.pc_k == 1 else self._merge(out, x)
        row, beta = arg if isinstance(arg, tuple) else (arg, None)
        out = sum(row[i] * op(xp) for i, op in zip(self.op_index, self.ops))
        return out if beta is None else beta * self._merge(out, x)

    def _merge(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """PC-DARTS: concatenate with the bypassed channels, then channel_shuffle(groups=pc_k)."""
        cat = torch.cat([out, self.bypass(x[:, self.channels :])], dim=1)
        n, c = cat.shape[:2]
        return cat.view(n, self.pc_k, c // self.pc_k, *cat.shape[2:]).transpose(1, 2).reshape(cat.shape)



# each mixed op with the node sum over its outputs: DARTS' plain sum, or the fused path's one-pass sum of Terms
MIXED_OPS: dict[str, tuple[type[ReferenceMixedOp] | type[FusedMixedOp], NodeSum]] = {
    "reference": (ReferenceMixedOp, plain_sum),
    "fused": (FusedMixedOp, fused_node_sum),
}


class _MixedOpBuilder:
    """EdgeBuilder of the supernet: every edge is a mixed op over the space's operators."""

    def __init__(self, space: SearchSpace, pc_k: int, kind: MixedOpKind) -> None:
        self.space, self.pc_k = space, pc_k
        self.cls = MIXED_OPS[kind][0]

    def __call__(self, cell_type: str, edge: int, C: int, stride: int, temporal_stride: int) -> nn.Module:
        return self.cls(self.space.ops, C, stride, temporal_stride, kernel=self.space.kernel, pc_k=self.pc_k)


def full_layout(space: SearchSpace) -> CellLayout:
    """Every edge of the supernet cell: node i reads the cell inputs and all earlier nodes."""
    k0 = space.num_inputs
    edges = tuple((i, j) for i in range(space.nodes) for j in range(k0 + i))
    return CellLayout(edges=edges, concat=tuple(range(k0, k0 + space.nodes)))


class SuperNet(VideoNet):
    """The one-shot network of a search space: every edge a mixed op weighted by softmax(α).

    α: one tensor [num_edges, num_ops] per cell type (normal; and reduce for the cell topology), drawn as
    1e-3·randn from ``generator``, which then draws the weights (PyTorch's default distributions). Pass a
    seeded generator for reproducible runs; without one, the global RNG is used as PyTorch does.

    With ``pc_k > 1``, PC-DARTS partial channels and edge normalization: β [num_edges] per cell type; node i
    sums its edges weighted by softmax(β) over its incoming edges, and ``genotype()`` ranks edges by
    softmax(α)·softmax(β). (It cuts saved activations 3×; on CPU at C=8 the 2-channel operators are slower
    per element than 8-channel ones, so a PC step is not faster there: use it for memory, or at larger C.)

    ``mixed_op``: ``reference`` (``ReferenceMixedOp``, DARTS as written) or ``fused`` (``FusedMixedOp``, the
    same values with less work: faster on CPU; on an H200 the reference was faster, 0.135 s vs 0.19 s a step).
    Both have the same parameters and buffers, so a state dict of one loads into the other.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        num_classes: int,
        channels: int,
        cells: int,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        fixed_kernel: str | None = None,
        pc_k: int = 1,
        consensus: str = "avg",
        mixed_op: MixedOpKind = "fused",
        generator: torch.Generator | None = None,
    ) -> None:
        if pc_k < 1:
            raise ValueError(f"pc_k must be >= 1, got {pc_k}")
        layout = full_layout(space)
        super().__init__(
            space,
            num_classes=num_classes,
            channels=channels,
            cells=cells,
            layouts={t: layout for t in space.cell_types},
            build_edge=_MixedOpBuilder(space, pc_k, mixed_op),
            node_sum=MIXED_OPS[mixed_op][1],
            stem_multiplier=stem_multiplier,
            stem_stride=stem_stride,
            fixed_kernel=fixed_kernel,
            consensus=consensus,
            generator=generator,
        )
        self.pc_k = pc_k
        self.layout = layout
        g = generator
        shape = (space.num_edges, len(space.ops))
        for t in space.cell_types:
            self.register_parameter(f"alpha_{t}", nn.Parameter(1e-3 * torch.randn(shape, generator=g)))
        if pc_k > 1:
            for t in space.cell_types:
                self.register_parameter(f"beta_{t}", nn.Parameter(1e-3 * torch.randn(space.num_edges, generator=g)))
        if g is not None:
            init_weights(self, g)
        self._path: dict[str, list[list[int]]] | None = None
        self._path_args: dict[str, list[int | None]] | None = None

    # --------------------------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        """α per cell type (then β per cell type with PC-DARTS)."""
        names = [f"alpha_{t}" for t in self.space.cell_types]
        if self.pc_k > 1:
            names += [f"beta_{t}" for t in self.space.cell_types]
        return [getattr(self, n) for n in names]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture ones."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def alphas(self) -> dict[str, torch.Tensor]:
        """softmax(α) per cell type, detached, on CPU: {"normal": [E, O], "reduce": [E, O]}."""
        return {t: F.softmax(getattr(self, f"alpha_{t}").detach(), dim=-1).cpu() for t in self.space.cell_types}

    def edge_weights(self) -> dict[str, torch.Tensor] | None:
        """PC-DARTS edge normalization: softmax(β) within each node's incoming edges, or None without PC."""
        if self.pc_k == 1:
            return None
        return {t: self._edge_scale(getattr(self, f"beta_{t}").detach()).cpu() for t in self.space.cell_types}

    def alphas_json(self) -> str:
        """{"ops": [...], "normal": [[w, ...] per edge], "reduce": [[...]] or null} (the tracking format)."""
        a = self.alphas()
        return json.dumps({
            "ops": list(self.space.ops),
            "normal": [[round(float(v), 6) for v in row] for row in a["normal"]],
            "reduce": [[round(float(v), 6) for v in row] for row in a["reduce"]] if "reduce" in a else None,
        })

    def _edge_scale(self, beta: torch.Tensor) -> torch.Tensor:
        k0, parts, start = self.space.num_inputs, [], 0
        for i in range(self.space.nodes):
            n = k0 + i
            parts.append(F.softmax(beta[start : start + n], dim=-1))
            start += n
        return torch.cat(parts)

    def genotype(self) -> Genotype:
        """The discrete cell(s) by the DARTS rule (see ``derive_genotype``)."""
        scales = self.edge_weights()
        return derive_genotype(self.space, self.alphas(), edge_weights=scales)

    # ---------------------------------------------------------------------------------- forward
    def _cell_args(self) -> dict[str, dict[str, Any]]:
        args: dict[str, dict[str, Any]] = {}
        for t in self.space.cell_types:
            if self._path is not None and self._path_args is not None:
                args[t] = {"edge_args": self._path_args[t], "active": self._path[t]}
                continue
            rows = F.softmax(getattr(self, f"alpha_{t}"), dim=-1)
            if self.pc_k > 1:
                scale = self._edge_scale(getattr(self, f"beta_{t}"))
                args[t] = {"edge_args": [(rows[e], scale[e]) for e in range(rows.shape[0])]}
            else:
                args[t] = {"edge_args": rows}
        return args

    def set_path(self, genotype: Genotype | None) -> None:
        """Single-path mode (random search with weight sharing): run only the genotype's edges, each with only
        its chosen op, unweighted; ``None`` goes back to the full weighted supernet."""
        if genotype is None:
            self._path = self._path_args = None
            return
        if genotype.topology != self.space.topology or genotype.num_nodes != self.space.nodes:
            raise UserError(
                f"genotype ({genotype.topology}, {genotype.num_nodes} nodes) does not fit search space "
                f"{self.space.name!r} ({self.space.topology}, {self.space.nodes} nodes)"
            )
        k0 = num_cell_inputs(self.space.topology)
        offsets = [sum(k0 + m for m in range(i)) for i in range(self.space.nodes)]
        path, path_args = {}, {}
        for t in self.space.cell_types:
            active: list[list[int]] = []
            edge_args: list[int | None] = [None] * self.space.num_edges
            for i, node_edges in enumerate(genotype.nodes(t)):
                active.append([])
                for op, j in node_edges:
                    if op not in self.space.searchable_ops:
                        raise UserError(
                            f"operator {op!r} is not in search space {self.space.name!r}; "
                            f"valid: {', '.join(self.space.searchable_ops)}"
                        )
                    e = offsets[i] + j
                    active[-1].append(e)
                    edge_args[e] = self.space.ops.index(op)
            path[t], path_args[t] = active, edge_args
        self._path, self._path_args = path, path_args
