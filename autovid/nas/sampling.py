"""Uniform random genotypes of a search space (random search baselines, random-WS single paths)."""

from __future__ import annotations

import numpy as np

from autovid.nas.genotype import Edge, Genotype, edges_per_node
from autovid.nas.search_space import SearchSpace


def sample_genotype(space: SearchSpace, rng: np.random.Generator) -> Genotype:
    """A genotype drawn uniformly from the discrete space of ``space``.

    Per cell type and node, the kept inputs are a uniform subset of size ``edges_per_node`` of the states the
    node can read and each kept edge gets a uniform operator among the non-zero ones (a derived genotype never
    holds zero: a zero edge is an absent edge). Every draw is a valid, buildable genotype.
    """
    ops = space.searchable_ops
    k0 = space.num_inputs
    cells: dict[str, tuple[Edge, ...]] = {}
    for cell in space.cell_types:
        edges: list[Edge] = []
        for node in range(space.nodes):
            inputs = rng.choice(k0 + node, size=edges_per_node(space.topology, node), replace=False)
            for j in sorted(int(i) for i in inputs):
                edges.append((ops[int(rng.integers(len(ops)))], j))
        cells[cell] = tuple(edges)
    concat = tuple(range(k0, k0 + space.nodes))
    if space.topology == "module":
        return Genotype("module", cells["normal"], concat)
    return Genotype("cell", cells["normal"], concat, cells["reduce"], concat)
