"""Atomic result files: the old content or the new one, never half a file, never a stray temporary."""

from __future__ import annotations

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
