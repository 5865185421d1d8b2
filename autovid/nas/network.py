"""The discrete network of a genotype, at any depth and width, for retraining from scratch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autovid.errors import UserError
from autovid.nas.cells import CellLayout, VideoNet, init_weights, shared_relu
from autovid.nas.genotype import Genotype
from autovid.nas.ops import OPS, PreActOp
from autovid.nas.search_space import SearchSpace


class DiscreteEdge(nn.Module):
    """One genotype edge: a single operator (affine BN), with drop path on non-identity ops while training."""

    def __init__(self, op: str, C: int, stride: int, temporal_stride: int, *, kernel: str) -> None:
        super().__init__()
        self.op = OPS[op](C, stride, True, kernel, temporal_stride=temporal_stride)
        self.preact = isinstance(self.op, PreActOp)
        self.droppable = not isinstance(self.op, nn.Identity)
        self.channels = C

    def forward(
        self, x: torch.Tensor, arg: tuple[float, torch.Generator] | None, cache: dict[Any, torch.Tensor]
    ) -> torch.Tensor:
        op = self.op
        y = op.forward_preact(shared_relu(x, self.channels, cache)) if isinstance(op, PreActOp) else op(x)
        if arg is not None and self.droppable and self.training:
            prob, generator = arg
            keep = 1.0 - prob
            # Per-sample mask drawn on CPU from the network's generator (no global RNG), then moved.
            mask = torch.empty((y.shape[0], 1, 1, 1, 1)).bernoulli_(keep, generator=generator).to(y.device, y.dtype)
            y = y * (mask / keep)
        return y


class _DiscreteBuilder:
    """EdgeBuilder of the discrete network: edge e of a cell type runs the genotype's op on that edge."""

    def __init__(self, genotype: Genotype, kernel: str) -> None:
        self.genotype, self.kernel = genotype, kernel

    def __call__(self, cell_type: str, edge: int, C: int, stride: int, temporal_stride: int) -> nn.Module:
        op, _ = self.genotype.edges(cell_type)[edge]
        return DiscreteEdge(op, C, stride, temporal_stride, kernel=self.kernel)


def genotype_layout(genotype: Genotype, cell: str) -> CellLayout:
    """The genotype's edges as (node, input) pairs, in the genotype's order."""
    edges = tuple((i, j) for i, node_edges in enumerate(genotype.nodes(cell)) for _, j in node_edges)
    return CellLayout(edges=edges, concat=genotype.concat(cell))


class Network(VideoNet):
    """A genotype stacked ``cells`` deep at ``channels`` width (same stem, reductions and TSN consensus as the
    supernet, through the shared ``VideoNet``), weights drawn from ``generator`` (global RNG without one).

    ``drop_path`` is the drop-path probability; the trainer may schedule it by assigning ``drop_path_prob``
    (DARTS raises it linearly over the epochs). Drop-path masks come from a generator seeded by
    ``drop_seed`` and the step counter buffer ``drop_step`` (saved in the state dict, so a resumed run draws
    the same masks).
    """

    def __init__(
        self,
        genotype: Genotype,
        space: SearchSpace,
        *,
        num_classes: int,
        channels: int,
        cells: int,
        consensus: str = "avg",
        drop_path: float = 0.0,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        fixed_kernel: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if genotype.topology != space.topology:
            raise UserError(f"genotype topology {genotype.topology!r} does not match search space "
                            f"{space.name!r} ({space.topology})")
        if genotype.num_nodes != space.nodes:
            raise UserError(f"genotype has {genotype.num_nodes} nodes, search space {space.name!r} has {space.nodes}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        super().__init__(
            space,
            num_classes=num_classes,
            channels=channels,
            cells=cells,
            layouts={t: genotype_layout(genotype, t) for t in genotype.cell_types},
            build_edge=_DiscreteBuilder(genotype, space.kernel),
            stem_multiplier=stem_multiplier,
            stem_stride=stem_stride,
            fixed_kernel=fixed_kernel,
            consensus=consensus,
            generator=generator,
        )
        self.genotype = genotype
        self.drop_path_prob = float(drop_path)
        if generator is not None:
            init_weights(self, generator)
        self.drop_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        self.drop_step: torch.Tensor
        self.register_buffer("drop_step", torch.zeros((), dtype=torch.long))

    def _cell_args(self) -> dict[str, dict[str, Any]]:
        if not (self.training and self.drop_path_prob > 0):
            return {}
        gen = torch.Generator().manual_seed(self.drop_seed + int(self.drop_step))
        self.drop_step += 1
        arg = (self.drop_path_prob, gen)
        n = {t: len(self.genotype.edges(t)) for t in self.genotype.cell_types}
        return {t: {"edge_args": [arg] * n[t]} for t in self.genotype.cell_types}
