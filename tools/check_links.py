"""Checks the relative links of Markdown files: each target file exists and each #anchor names a heading in it.

Usage: ``python tools/check_links.py [FILE.md ...]`` (default: README.md and docs/*.md). Prints one line per
broken link, ``file:line: target: why``, and exits 1 if there is any. External links (``http:``, ``mailto:``)
are not fetched: CI has no network to check them against.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("README.md", "docs/*.md")
# [text](target "title") and ![alt](target); <a href="..."> / <img src="..."> in raw HTML; [label]: target
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code blocks and code spans."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        prose = INLINE_CODE.sub("", line)
        for pattern in (INLINE, HTML, DEFINITION):
            for match in pattern.finditer(prose):
                yield number, match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its visible text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: Counter[str] = Counter()
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := HEADING.match(line)):
            base = slug(heading.group(1))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return frozenset(found)


def problem(source: Path, target: str) -> str | None:
    """Why ``target``, linked from ``source``, is broken; None when it resolves."""
    if EXTERNAL.match(target):
        return None
    location, _, anchor = target.partition("#")
    path = (source.parent / unquote(location)).resolve() if location else source
    if not path.exists():
        return "no such file"
    if anchor and path.suffix.lower() == ".md" and unquote(anchor).lower() not in anchors(path):
        return f"no heading with anchor #{anchor} in {path.name}"
    return None


def broken_links(files: Sequence[Path]) -> list[str]:
    """One ``file:line: target: why`` line per broken link in ``files``."""
    report = []
    for source in files:
        for number, target in links(source.read_text(encoding="utf-8")):
            if (why := problem(source, target)) is not None:
                report.append(f"{source}:{number}: {target}: {why}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    files = [Path(a) for a in args] or sorted(p for pattern in DEFAULT_FILES for p in ROOT.glob(pattern))
    report = broken_links(files)
    for line in report:
        print(line, file=sys.stderr)
    print(f"checked the links of {len(files)} Markdown files: {len(report)} broken", file=sys.stderr)
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
