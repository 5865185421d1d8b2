"""Search spaces: the built-in YAML files load and validate; bad ones are one-line UserErrors."""

from __future__ import annotations

import pytest
import yaml

from autovid.errors import UserError
from autovid.nas.ops import OPS
from autovid.nas.search_space import SearchSpace, list_search_spaces, load_search_space

PAPER_OPS = ("zero", "skip", "max_pool_3", "avg_pool_3", "conv_1", "conv_3", "sep_conv_3", "dil_conv_3")


def test_builtin_spaces_load():
    names = list_search_spaces()
    assert {"p3d", "full3d", "p2d", "p3d_cell", "full3d_cell", "p2d_cell"} <= set(names)
    for name in names:
        space = load_search_space(name)
        assert space.name == name and all(op in OPS for op in space.ops) and space.description


def test_paper_space():
    space = load_search_space("p3d")
    assert (space.topology, space.nodes, space.kernel, space.ops) == ("module", 3, "p3d", PAPER_OPS)
    assert space.num_edges == 1 + 2 + 3 and space.cell_types == ("normal",)
    assert space.searchable_ops == PAPER_OPS[1:]
    assert load_search_space("full3d").kernel == "full3d" and load_search_space("p2d").kernel == "p2d"
    cell = load_search_space("p3d_cell")
    assert (cell.topology, cell.nodes, cell.num_edges, cell.cell_types) == ("cell", 4, 14, ("normal", "reduce"))


def _write(tmp_path, **data):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_from_path_and_round_trip(tmp_path):
    path = _write(tmp_path, name="mine", kernel="p3d", topology="cell", nodes=2, ops=["skip", "conv_3"])
    space = load_search_space(path)
    assert space == SearchSpace.from_dict(space.to_dict())
    assert (space.name, space.num_edges) == ("mine", 2 + 3)


def test_unknown_op_lists_the_valid_names(tmp_path):
    path = _write(tmp_path, name="bad", kernel="p3d", ops=["skip", "conv_7"])
    with pytest.raises(UserError, match=r"unknown operator.*'conv_7'.*valid: .*sep_conv_3"):
        load_search_space(path)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"topology": "graph"}, "topology"),
        ({"kernel": "p4d"}, "kernel"),
        ({"nodes": 0}, "nodes"),
        ({"ops": ["zero"]}, "other than 'zero'"),
        ({"ops": ["skip", "skip"]}, "twice"),
        ({"ops": "skip"}, "list"),
        ({"reduce_temporal": "yes"}, "reduce_temporal"),
        ({"cells": 5}, "unknown key"),
    ],
)
def test_inconsistent_spaces_are_user_errors(tmp_path, change, message):
    data = {"name": "bad", "kernel": "p3d", "ops": ["skip", "conv_3"], **change}
    with pytest.raises(UserError, match=message):
        load_search_space(_write(tmp_path, **data))


def test_unknown_builtin_name_lists_names():
    with pytest.raises(UserError, match="p3d"):
        load_search_space("p5d")
