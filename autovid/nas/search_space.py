"""Declarative search spaces: a frozen SearchSpace value loaded and validated from search_spaces/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autovid.errors import UserError
from autovid.nas.ops import KERNELS, OPS
from autovid.resources import list_resources, resource_path
from autovid.safe_yaml import read_yaml_file

TOPOLOGIES: tuple[str, ...] = ("module", "cell")


@dataclass(frozen=True)
class SearchSpace:
    """What is searched: candidate operators, their kernel style, and the wiring of a cell.

    topology "module" (the paper): one input, ``nodes`` hidden nodes, node i fed by the input and every
    earlier node through mixed ops; the module output is the concatenation of the hidden nodes followed by a
    1×1×1 ReLU-Conv-BN back to C channels. One α tensor; fixed (non-searched) reduction blocks sit between
    modules at 1/3 and 2/3 of the depth.

    topology "cell" (DARTS): two inputs (the previous two cells), ``nodes`` nodes each fed by both inputs and
    every earlier node; output = concatenation of the nodes. Normal and reduction cells with separate α;
    reduction cells at 1/3 and 2/3 of the depth halve H and W (and T when ``reduce_temporal``).
    """

    name: str  # short identifier, e.g. "p3d"
    ops: tuple[str, ...]  # candidate operator names, keys of autovid.nas.ops.OPS
    kernel: str  # "p3d" (1×k×k then k×1×1) | "full3d" (k×k×k) | "p2d" (1×k×k only)
    topology: str = "module"  # "module" (paper) | "cell" (DARTS)
    nodes: int = 3  # hidden nodes per module/cell
    reduce_temporal: bool = False  # reductions also halve T
    description: str = ""

    def __post_init__(self) -> None:
        where = f"search space {self.name!r}"
        if not self.ops:
            raise UserError(f"{where}: 'ops' is empty")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise UserError(f"{where}: unknown operator(s) {', '.join(map(repr, unknown))}; valid: {', '.join(OPS)}")
        if len(set(self.ops)) != len(self.ops):
            raise UserError(f"{where}: operators listed twice in 'ops'")
        if all(op == "zero" for op in self.ops):
            raise UserError(f"{where}: needs at least one operator other than 'zero'")
        if self.kernel not in KERNELS:
            raise UserError(f"{where}: unknown kernel {self.kernel!r}; valid: {', '.join(KERNELS)}")
        if self.topology not in TOPOLOGIES:
            raise UserError(f"{where}: unknown topology {self.topology!r}; valid: {', '.join(TOPOLOGIES)}")
        if not isinstance(self.nodes, int) or isinstance(self.nodes, bool) or not 1 <= self.nodes <= 8:
            raise UserError(f"{where}: 'nodes' must be an integer in 1..8, got {self.nodes!r}")
        if not isinstance(self.reduce_temporal, bool):
            raise UserError(f"{where}: 'reduce_temporal' must be true or false, got {self.reduce_temporal!r}")

    @property
    def num_inputs(self) -> int:
        """Inputs of one cell: 1 for a module, 2 for a DARTS cell."""
        return 1 if self.topology == "module" else 2

    @property
    def num_edges(self) -> int:
        """Edges of the supernet cell: node i has ``num_inputs + i`` incoming edges."""
        return sum(self.num_inputs + i for i in range(self.nodes))

    @property
    def cell_types(self) -> tuple[str, ...]:
        """("normal",) for modules, ("normal", "reduce") for DARTS cells."""
        return ("normal",) if self.topology == "module" else ("normal", "reduce")

    @property
    def searchable_ops(self) -> tuple[str, ...]:
        """The operators a derived genotype can use (every op but zero)."""
        return tuple(op for op in self.ops if op != "zero")

    def check_genotype(self, genotype: Any) -> None:
        """A one-line UserError unless ``genotype`` (a nas.genotype.Genotype) has this space's topology, node
        count and only its operators."""
        if genotype.topology != self.topology or genotype.num_nodes != self.nodes:
            raise UserError(f"genotype ({genotype.topology}, {genotype.num_nodes} nodes) does not fit search space "
                            f"{self.name!r} ({self.topology}, {self.nodes} nodes)")
        foreign = sorted({op for cell in genotype.cell_types for op, _ in genotype.edges(cell)} - set(self.ops))
        if foreign:
            raise UserError(f"genotype uses operator(s) {', '.join(foreign)} that search space {self.name!r} lacks")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "topology": self.topology,
            "nodes": self.nodes,
            "kernel": self.kernel,
            "reduce_temporal": self.reduce_temporal,
            "ops": list(self.ops),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str | None = None) -> SearchSpace:
        """Build from a YAML mapping; unknown keys and missing ones are UserErrors."""
        if not isinstance(data, dict):
            raise UserError(f"search space {name!r}: expected a mapping, got {type(data).__name__}")
        allowed = {"name", "description", "topology", "nodes", "kernel", "reduce_temporal", "ops"}
        extra = sorted(set(data) - allowed)
        label = data.get("name", name)
        if extra:
            raise UserError(
                f"search space {label!r}: unknown key(s) {', '.join(extra)}; valid: {', '.join(sorted(allowed))}"
            )
        missing = [k for k in ("ops", "kernel") if k not in data]
        if missing:
            raise UserError(f"search space {label!r}: missing key(s) {', '.join(missing)}")
        ops = data["ops"]
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)):
            raise UserError(f"search space {label!r}: 'ops' must be a list of operator names")
        return cls(
            name=str(label or "custom"),
            ops=tuple(str(op) for op in ops),
            kernel=str(data["kernel"]),
            topology=str(data.get("topology", "module")),
            nodes=data.get("nodes", 3),
            reduce_temporal=data.get("reduce_temporal", False),
            description=str(data.get("description", "")).strip(),
        )


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    """Load a built-in space by name (``p3d``, ``full3d``, ``p2d``, ``p3d_cell``, ...) or from a YAML file."""
    path = resource_path("search_spaces", name_or_path)
    return SearchSpace.from_dict(read_yaml_file(path, what="search space"), name=path.stem)


def list_search_spaces() -> list[str]:
    """Names of the built-in search spaces."""
    return list_resources("search_spaces")
