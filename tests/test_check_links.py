"""The Markdown link checker that `make docs` and CI run: broken files and anchors are found, good ones pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.check_links import ROOT, anchors, broken_links, slug

GOOD = """# Guide

## Run it: `autovid tune` (fast!)

## Run it: `autovid tune` (fast!)

See [the other page](other.md#data-formats), [twice](#run-it-autovid-tune-fast-1), ![plot](plot.png),
[ref]: other.md and <a href="other.md#data-formats">html</a>, [web](https://example.org/nowhere).

```
[not a link](missing.md) inside a code block
```
and `[nor this](missing.md)` in a code span.
"""


def _write(tmp_path: Path, guide: str) -> Path:
    (tmp_path / "other.md").write_text("# Other\n\n## Data formats\n")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG")
    path = tmp_path / "guide.md"
    path.write_text(guide)
    return path


def test_resolving_links_pass(tmp_path: Path) -> None:
    assert broken_links([_write(tmp_path, GOOD)]) == []
    assert anchors(tmp_path / "guide.md") == {"guide", "run-it-autovid-tune-fast", "run-it-autovid-tune-fast-1"}
    assert slug("Results: top-1 ± CI, `k=8`") == "results-top-1--ci-k8"


def test_a_missing_file_or_anchor_is_reported_with_its_line(tmp_path: Path) -> None:
    guide = _write(tmp_path, GOOD + "\n[gone](nothere.md) and [bad anchor](other.md#results)\n[self](#nowhere)\n")
    lines = guide.read_text().splitlines()
    gone, self_line = lines.index("[gone](nothere.md) and [bad anchor](other.md#results)") + 1, len(lines)
    assert broken_links([guide]) == [
        f"{guide}:{gone}: nothere.md: no such file",
        f"{guide}:{gone}: other.md#results: no heading with anchor #results in other.md",
        f"{guide}:{self_line}: #nowhere: no heading with anchor #nowhere in guide.md",
    ]


def test_the_command_fails_on_a_broken_link_and_passes_on_the_project_docs(tmp_path: Path) -> None:
    guide = _write(tmp_path, "[gone](nothere.md)\n")
    script = ROOT / "tools" / "check_links.py"
    failed = subprocess.run([sys.executable, str(script), str(guide)], capture_output=True, text=True)
    assert failed.returncode == 1 and "nothere.md: no such file" in failed.stderr
    project = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert project.returncode == 0, project.stderr  # README.md and docs/*.md, whatever the working folder


def test_api_reference_links_to_a_missing_page_or_anchor_are_found(tmp_path: Path) -> None:
    from tools.build_docs import dangling_links

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.html").write_text('<h2 id="f">f</h2><a href="#f">f</a> <a href="b.html#g">g</a> '
                                             '<a href="../pkg.html">up</a> <a href="https://x.org/y.html">web</a>')
    (tmp_path / "pkg" / "b.html").write_text('<div id="h"></div><a href="a.html#_Private">base</a>')
    assert dangling_links(tmp_path) == ["pkg/a.html: b.html#g: no such anchor", "pkg/a.html: ../pkg.html: no such page"]
