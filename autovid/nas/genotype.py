"""The discrete architecture: a frozen Genotype value with JSON round trip, stable hash, text and PNG views."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from autovid.errors import UserError
from autovid.nas.ops import OPS, PARAM_FREE_OPS

if TYPE_CHECKING:
    from autovid.nas.search_space import SearchSpace

Edge = tuple[str, int]  # (operator name, input index)


def edges_per_node(topology: str, node: int) -> int:
    """How many incoming edges node ``node`` keeps in a genotype.

    cell (DARTS): 2 for every node. module (single input, the paper): ``min(2, node + 1)`` — node 0 can only
    read the module input, so it keeps one edge; later nodes keep two, like DARTS.
    """
    return 2 if topology == "cell" else min(2, node + 1)


def num_cell_inputs(topology: str) -> int:
    """Cell inputs before the nodes in the input numbering: 1 (module) or 2 (cell)."""
    return 1 if topology == "module" else 2


def _nodes_for(topology: str, num_edges: int) -> int:
    """Invert ``sum(edges_per_node)``: the node count of a genotype with ``num_edges`` edges."""
    total, n = 0, 0
    while total < num_edges:
        total += edges_per_node(topology, n)
        n += 1
    if total != num_edges:
        raise UserError(f"a {topology} genotype cannot have {num_edges} edges")
    return n


def _canonical(topology: str, edges: tuple[Edge, ...]) -> tuple[Edge, ...]:
    """Sort each node's edges by (input, op) so that one architecture has one JSON form and one hash."""
    if topology not in ("module", "cell") or not edges:
        return edges
    out: list[Edge] = []
    start, node = 0, 0
    while start < len(edges):
        k = edges_per_node(topology, node)
        out.extend(sorted(edges[start : start + k], key=lambda e: (e[1], e[0])))
        start, node = start + k, node + 1
    return tuple(out)


@dataclass(frozen=True)
class Genotype:
    """A derived cell: for each node, its kept incoming edges as ``(op, input_index)`` pairs.

    Edges are listed node after node (``edges_per_node`` per node). Input indices: for a cell, 0 and 1 are
    the outputs of the cells k-2 and k-1 and 2+i is node i; for a module, 0 is the module input and 1+i is
    node i. ``*_concat`` lists the state indices concatenated into the output. A module genotype has an
    empty ``reduce`` (its reductions are fixed blocks, not searched).
    """

    topology: str
    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...] = ()
    reduce_concat: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.topology not in ("module", "cell"):
            raise UserError(f"genotype: unknown topology {self.topology!r}; valid: module, cell")
        for field in ("normal", "reduce"):
            edges = tuple((str(op), int(j)) for op, j in getattr(self, field))
            object.__setattr__(self, field, _canonical(self.topology, edges))
            object.__setattr__(self, f"{field}_concat", tuple(int(i) for i in getattr(self, f"{field}_concat")))
        if not self.normal:
            raise UserError("genotype: the normal cell has no edges")
        if self.topology == "module" and (self.reduce or self.reduce_concat):
            raise UserError("genotype: a module genotype has no reduction cell")
        if self.topology == "cell" and not self.reduce:
            raise UserError("genotype: a cell genotype needs a reduction cell")
        for cell in self.cell_types:
            self._validate(cell)

    def _validate(self, cell: str) -> None:
        edges, concat = self.edges(cell), self.concat(cell)
        n = _nodes_for(self.topology, len(edges))
        k0 = num_cell_inputs(self.topology)
        for node, node_edges in enumerate(self.nodes(cell)):
            for op, j in node_edges:
                if op not in OPS:
                    raise UserError(f"genotype: unknown operator {op!r}; valid: {', '.join(OPS)}")
                if not 0 <= j < k0 + node:
                    raise UserError(f"genotype: {cell} node {node} reads state {j}, which does not exist yet")
        if not concat or any(not k0 <= i < k0 + n for i in concat):
            raise UserError(f"genotype: {cell}_concat {list(concat)} must name nodes {k0}..{k0 + n - 1}")

    # ----------------------------------------------------------------------------------------- views
    @property
    def cell_types(self) -> tuple[str, ...]:
        return ("normal",) if self.topology == "module" else ("normal", "reduce")

    @property
    def num_nodes(self) -> int:
        return _nodes_for(self.topology, len(self.normal))

    def edges(self, cell: str = "normal") -> tuple[Edge, ...]:
        if cell not in ("normal", "reduce"):
            raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
        return self.normal if cell == "normal" else self.reduce

    def concat(self, cell: str = "normal") -> tuple[int, ...]:
        return self.normal_concat if cell == "normal" else self.reduce_concat

    def nodes(self, cell: str = "normal") -> list[list[Edge]]:
        """The edges grouped by node: ``nodes()[i]`` are node i's ``(op, input)`` pairs."""
        edges, out, start = self.edges(cell), [], 0
        for node in range(_nodes_for(self.topology, len(edges))):
            k = edges_per_node(self.topology, node)
            out.append(list(edges[start : start + k]))
            start += k
        return out

    def num_skips(self, cell: str = "normal") -> int:
        """Skip connections in one cell (the DARTS+ collapse criterion counts them in the normal cell)."""
        return sum(op == "skip" for op, _ in self.edges(cell))

    def num_param_free(self, cell: str = "normal") -> int:
        """Parameter-free operators (skip, pools, zero) in one cell."""
        return sum(op in PARAM_FREE_OPS for op, _ in self.edges(cell))

    # ------------------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "normal": [[op, j] for op, j in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, j] for op, j in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal genotypes give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Genotype:
        try:
            return cls(
                topology=data["topology"],
                normal=tuple(tuple(e) for e in data["normal"]),
                normal_concat=tuple(data["normal_concat"]),
                reduce=tuple(tuple(e) for e in data.get("reduce") or ()),
                reduce_concat=tuple(data.get("reduce_concat") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"not a genotype: {type(exc).__name__}: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"genotype is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UserError("genotype JSON must be an object")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"genotype file not found: {path}")
        return cls.from_json(path.read_text())

    @property
    def hash(self) -> str:
        """Stable short id: the first 12 hex digits of the SHA-1 of the canonical JSON."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    # -------------------------------------------------------------------------------- rendering
    def state_name(self, index: int) -> str:
        """Human name of a state index: ``in`` / ``c_{k-2}``, ``c_{k-1}`` for inputs, ``n0``.. for nodes."""
        if self.topology == "module":
            return "in" if index == 0 else f"n{index - 1}"
        return ("c_{k-2}", "c_{k-1}")[index] if index < 2 else f"n{index - 2}"

    def __str__(self) -> str:
        lines = [f"Genotype {self.topology} ({self.num_nodes} nodes) {self.hash}"]
        for cell in self.cell_types:
            k0 = num_cell_inputs(self.topology)
            out = " + ".join(f"n{i - k0}" for i in self.concat(cell))
            lines.append(f"  {cell}: out = concat({out})" + (" -> conv_1" if self.topology == "module" else ""))
            for i, node_edges in enumerate(self.nodes(cell)):
                terms = " + ".join(f"{op}({self.state_name(j)})" for op, j in node_edges)
                lines.append(f"    n{i} = {terms}")
        return "\n".join(lines)

    def plot(self, path: str | Path, *, title: str | None = None) -> Path:
        """Draw the cell DAG(s) to a PNG with matplotlib only (no graphviz); returns the path."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cells = self.cell_types
        fig = Figure(figsize=(6.5 * len(cells), 4.2))
        FigureCanvasAgg(fig)  # attaches the Agg canvas; no pyplot, no global backend change
        for ax, cell in zip(fig.subplots(1, len(cells), squeeze=False)[0], cells):
            _draw_cell(ax, self, cell)
        fig.suptitle(title or f"{self.topology} genotype {self.hash}", fontsize=11)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return path


def derive_genotype(
    space: SearchSpace,
    weights: Mapping[str, torch.Tensor | np.ndarray],
    *,
    edge_weights: Mapping[str, torch.Tensor | np.ndarray] | None = None,
) -> Genotype:
    """The DARTS derive rule on softmax(α) rows ``weights[cell] [num_edges, num_ops]``.

    For every node, each incoming edge is scored by its strongest non-zero operator; the node keeps its
    ``edges_per_node`` best-scored edges (2 for DARTS cells; ``min(2, i + 1)`` for node i of a single-input
    module, whose node 0 has only the module input to read), each with that strongest operator. Ties go to
    the lower input index and the earlier operator of the space. With PC-DARTS ``edge_weights[cell]``
    [num_edges] (softmax(β) per node) multiplies the rows before scoring, as in the PC-DARTS reference.
    Every node concatenates into the output.
    """
    ops = space.ops
    candidates = [o for o, name in enumerate(ops) if name != "zero"]
    k0 = space.num_inputs
    cells: dict[str, tuple[Edge, ...]] = {}
    for cell in space.cell_types:
        w = np.asarray(_to_numpy(weights[cell]), dtype=np.float64)
        if w.shape != (space.num_edges, len(ops)):
            raise ValueError(f"{cell} weights must have shape {(space.num_edges, len(ops))}, got {w.shape}")
        if edge_weights is not None:
            w = w * np.asarray(_to_numpy(edge_weights[cell]), dtype=np.float64)[:, None]
        kept: list[Edge] = []
        start = 0
        for node in range(space.nodes):
            n = k0 + node
            scored = []
            for j in range(n):
                row = w[start + j]
                best = max(candidates, key=lambda o: (row[o], -o))
                scored.append((-row[best], j, ops[best]))
            scored.sort()  # strongest first; ties: lower input index
            kept.extend((op, j) for _, j, op in scored[: edges_per_node(space.topology, node)])
            start += n
        cells[cell] = tuple(kept)
    concat = tuple(range(k0, k0 + space.nodes))
    if space.topology == "module":
        return Genotype("module", cells["normal"], concat)
    return Genotype("cell", cells["normal"], concat, cells["reduce"], concat)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x)


_OP_COLORS = {
    "skip": "#7f7f7f",
    "max_pool_3": "#17becf",
    "avg_pool_3": "#2ca02c",
    "conv_1": "#9467bd",
    "conv_3": "#d62728",
    "conv_5": "#8c564b",
    "sep_conv_3": "#1f77b4",
    "sep_conv_5": "#393b79",
    "dil_conv_3": "#ff7f0e",
    "dil_conv_5": "#e377c2",
    "zero": "#cccccc",
}


def _draw_cell(ax: Any, genotype: Genotype, cell: str) -> None:
    """Inputs on the left, nodes in the middle (alternating up/down), output on the right."""
    from matplotlib.patches import FancyArrowPatch

    k0 = num_cell_inputs(genotype.topology)
    nodes = genotype.nodes(cell)
    pos: dict[int, tuple[float, float]] = {}
    for j in range(k0):
        pos[j] = (0.0, 0.0 if k0 == 1 else 1.0 - 2.0 * j)
    for i in range(len(nodes)):
        pos[k0 + i] = (1.0 + i, 0.9 if i % 2 == 0 else -0.9)
    out_x = float(len(nodes) + 1)
    pos[-1] = (out_x, 0.0)

    def arrow(a: tuple[float, float], b: tuple[float, float], color: str, rad: float, style: str = "-") -> None:
        ax.add_patch(
            FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.6, linestyle=style,
                            connectionstyle=f"arc3,rad={rad}", shrinkA=14, shrinkB=14)
        )

    for i, node_edges in enumerate(nodes):
        for e, (op, j) in enumerate(node_edges):
            a, b = pos[j], pos[k0 + i]
            rad = 0.25 if e % 2 == 0 else -0.25
            color = _OP_COLORS.get(op, "black")
            arrow(a, b, color, rad)
            # The label sits on the arc: a quadratic Bézier whose control point matplotlib's arc3 puts at
            # midpoint + rad·(dy, -dx); its t=1/2 point is midpoint + rad/2·(dy, -dx).
            dx, dy = b[0] - a[0], b[1] - a[1]
            lx, ly = (a[0] + b[0]) / 2 + rad / 2 * dy, (a[1] + b[1]) / 2 - rad / 2 * dx
            ax.text(lx, ly, op, fontsize=7, ha="center", va="center", color=color,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for i in genotype.concat(cell):
        arrow(pos[i], pos[-1], "#444444", 0.0, "--")
    for idx, (x, y) in pos.items():
        label = "out" if idx == -1 else genotype.state_name(idx)
        face = "#fde9c8" if idx == -1 else ("#d8e8f8" if idx < k0 else "#e8f4e0")
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "fc": face, "ec": "#333333"})
    ax.set_xlim(-0.6, out_x + 0.6)
    ax.set_ylim(-1.9, 1.9)
    ax.set_title(cell + (" module" if genotype.topology == "module" else " cell"), fontsize=10)
    ax.axis("off")
