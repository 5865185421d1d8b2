"""Builds the API reference (pdoc, from the docstrings) into docs/api/ and fails on anything pdoc warns about.

Usage: ``python tools/build_docs.py [OUTPUT_DIR]`` (``make docs``). pdoc warns, and this exits 1, when a
module cannot be imported, an ``__all__`` entry does not resolve, or an annotation cannot be parsed; the
generated pages' own links (to other modules and to anchors in them) are then checked to resolve as well.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

ROOT = Path(__file__).resolve().parent.parent
# pdoc evaluates the annotations of a NamedTuple's synthesized __init__ in the namespace of `collections`, where
# the names of a module with postponed annotations are unknown: a pdoc limitation, not a broken reference
NAMEDTUPLE_INIT = re.compile(r"Error parsing type annotation .* for (\S+)\.__init__\. Import of \S+ failed")
HREF = re.compile(r'href="([^"#:]*)(?:#([^"]*))?"')
ID = re.compile(r'\bid="([^"]+)"')


def dangling_links(output: Path) -> list[str]:
    """``page: target`` for every relative link between generated pages whose file or anchor is missing."""
    ids: dict[Path, set[str]] = {}
    problems = []
    for page in sorted(output.rglob("*.html")):
        for location, anchor in HREF.findall(page.read_text(encoding="utf-8")):
            target = (page.parent / location).resolve() if location else page.resolve()
            if target.suffix != ".html":
                continue
            if not target.is_file():
                problems.append(f"{page.relative_to(output)}: {location}: no such page")
                continue
            # pdoc links to private base classes (_Frozen) that it does not render: it hides _names by design
            if anchor and not anchor.startswith("_"):
                known = ids.setdefault(target, set(ID.findall(target.read_text(encoding="utf-8"))))
                if anchor not in known:
                    problems.append(f"{page.relative_to(output)}: {location}#{anchor}: no such anchor")
    return problems


def _namedtuple_init(message: str) -> bool:
    match = NAMEDTUPLE_INIT.search(message)
    if match is None:
        return False
    module, _, name = match.group(1).rpartition(".")
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    output = Path(args[0]) if args else ROOT / "docs" / "api"
    pdoc.render.configure(docformat="restructuredtext", show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc("autovid", output_directory=output)
    problems = [f"pdoc: {' '.join(str(w.message).split())[:500]}" for w in caught
                if Path(w.filename).parent.name == "pdoc"  # not the libraries autovid imports
                and not _namedtuple_init(str(w.message))]
    problems += dangling_links(output)
    for line in problems:
        print(line, file=sys.stderr)
    pages = len(list(output.rglob("*.html")))
    print(f"API reference: {pages} pages in {output}, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
