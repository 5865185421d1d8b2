"""Atomic result files: the old content or the new one, never half a file, never a stray temporary."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from autovid.files import write_bytes_atomic, write_csv_atomic, write_text_atomic


def test_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.csv"
    write_text_atomic(target, "old\n")
    write_csv_atomic(pd.DataFrame({"a": [1, 2]}), target)
    assert target.read_text() == "a\n1\n2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "final_metrics.json"
    write_text_atomic(target, '{"test/acc": 0.9}')
    with pytest.raises(TypeError):
        write_bytes_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails after the temporary is open
    assert target.read_text() == '{"test/acc": 0.9}'
    assert [p.name for p in tmp_path.iterdir()] == ["final_metrics.json"]


def test_check_output_refuses_inputs_through_links_and_inside_trees(tmp_path: Path) -> None:
    from autovid.errors import UserError
    from autovid.files import check_output

    model, data = tmp_path / "state.pt", tmp_path / "data"
    model.write_bytes(b"weights")
    (data / "a").mkdir(parents=True)
    (tmp_path / "link.csv").symlink_to(model)
    cases = [
        (model, "is an input of this command"),
        (tmp_path / "link.csv", "is an input of this command (" + str(model)),  # the link resolves to the model
        (tmp_path / "sub" / ".." / "state.pt", "is an input"),
        (data / "a" / "manifest.parquet", "is inside"),
        (data, "is inside"),
    ]
    for out, needle in cases:
        with pytest.raises(UserError, match=re.escape(needle)):
            check_output(out, [model], trees=[data], overwrite=True)  # --overwrite never lets an input go
    assert model.read_bytes() == b"weights"
    assert check_output(tmp_path / "new.csv", [model], trees=[data], overwrite=False) == tmp_path / "new.csv"


def test_an_existing_output_needs_overwrite_and_a_link_is_replaced_not_followed(tmp_path: Path) -> None:
    from autovid.errors import UserError
    from autovid.files import check_output

    old, target = tmp_path / "preds.csv", tmp_path / "elsewhere.csv"
    old.write_text("old\n")
    target.write_text("keep\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "missing")
    for out, needle in ((old, "exists; add --overwrite"), (link, "is a symbolic link; add --overwrite"),
                        (dangling, "is a symbolic link"), (tmp_path, "is a folder")):
        with pytest.raises(UserError, match=needle):
            check_output(out, overwrite=False)
    for out in (old, link, dangling):
        check_output(out, overwrite=True)
        write_text_atomic(out, "new\n")
        assert out.read_text() == "new\n" and not out.is_symlink()
    assert target.read_text() == "keep\n"  # the link's target is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.csv", "elsewhere.csv", "link.csv", "preds.csv"]


def test_a_link_left_at_a_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    """The temporary file is created exclusively under a fresh name: a link planted at the old fixed name
    (`.name.tmp`) no longer redirects the write."""
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / ".out.csv.tmp").symlink_to(victim)
    write_text_atomic(tmp_path / "out.csv", "data\n")
    assert victim.read_text() == "keep\n" and (tmp_path / "out.csv").read_text() == "data\n"
