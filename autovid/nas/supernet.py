"""The DARTS supernet over a video search space: mixed ops, α (and PC-DARTS β), derive, single-path mode."""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autovid.errors import UserError
from autovid.nas.cells import CellLayout, Terms, VideoNet, channel_shuffle_merge, init_weights, shared_relu
from autovid.nas.genotype import Genotype, derive_genotype, num_cell_inputs
from autovid.nas.ops import OPS, PreActOp
from autovid.nas.sampling import sample_genotype
from autovid.nas.search_space import SearchSpace

__all__ = ["MixedOp", "SuperNet", "channel_shuffle_merge", "sample_genotype"]


class MixedOp(nn.Module):
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
        if C % pc_k:
            raise ValueError(f"PC-DARTS needs channels divisible by pc_k={pc_k}, got {C}")
        self.pc_k = pc_k
        self.channels = C // pc_k
        self.stride, self.temporal_stride = stride, temporal_stride
        self.num_ops = len(ops)
        modules, index, preact = [], [], []
        for i, name in enumerate(ops):
            if name == "zero":
                continue
            op = OPS[name](self.channels, stride, False, kernel, temporal_stride=temporal_stride)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm3d(self.channels, affine=False))
            modules.append(op)
            index.append(i)
            preact.append(isinstance(op, PreActOp))
        self.ops = nn.ModuleList(modules)
        self.op_index = tuple(index)  # position in the α row of each module in self.ops
        self.register_buffer("_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.preact = tuple(preact)
        self.shareable = frozenset(k for k, i in enumerate(index) if "pool" in ops[i])
        self._slot = {i: k for k, i in enumerate(index)}
        if pc_k > 1 and (stride > 1 or temporal_stride > 1):
            self.bypass: nn.Module = nn.MaxPool3d((temporal_stride, stride, stride), ceil_mode=True)
        else:
            self.bypass = nn.Identity()

    def share_from(self, other: MixedOp) -> None:
        """Use ``other``'s pooling modules (pool + non-affine BN: no parameters, deterministic): edges reading
        the same state then compute each pooling once per forward (see ``_run``), BN running statistics
        included. Exact, since those edges see the same input with the same strides."""
        if other.op_index != self.op_index or other.channels != self.channels:
            raise ValueError("can only share with a MixedOp over the same operators and channels")
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
            return op.forward_preact(shared_relu(x, self.channels, cache), scale)
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


class _MixedOpBuilder:
    """EdgeBuilder of the supernet: every edge is a MixedOp over the space's operators."""

    def __init__(self, space: SearchSpace, pc_k: int) -> None:
        self.space, self.pc_k = space, pc_k

    def __call__(self, cell_type: str, edge: int, C: int, stride: int, temporal_stride: int) -> nn.Module:
        return MixedOp(self.space.ops, C, stride, temporal_stride, kernel=self.space.kernel, pc_k=self.pc_k)


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
        pc_k: int = 1,
        consensus: str = "avg",
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
            build_edge=_MixedOpBuilder(space, pc_k),
            stem_multiplier=stem_multiplier,
            stem_stride=stem_stride,
            consensus=consensus,
            generator=generator,
        )
        self._config: dict[str, Any] = dict(
            num_classes=num_classes, channels=channels, cells=cells, stem_multiplier=stem_multiplier,
            stem_stride=stem_stride, pc_k=pc_k, consensus=consensus,
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
            if self._path is not None:
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

    # --------------------------------------------------------------------------------- utilities
    def new(self) -> SuperNet:
        """A structurally identical supernet holding a copy of this one's parameters and buffers (α included),
        on the same device; for the second-order architect's unrolled model."""
        device = next(self.parameters()).device
        model = SuperNet(self.space, **self._config, generator=torch.Generator()).to(device)
        model.load_state_dict(self.state_dict())
        model.set_memory_format(self.memory_format)
        model._path, model._path_args = self._path, self._path_args
        return model
