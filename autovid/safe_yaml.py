"""The one YAML reader of configs, search spaces and ablation arms: bounded in size, nesting depth and alias
expansion, so that no file or override can hang the loader or exhaust memory; every refusal is one line.

Aliases are allowed (a config may share a block through an anchor), but the document is measured as if every
alias were copied out: a "billion laughs" of nested aliases is a few hundred bytes that expand to billions of
values, and pydantic (which copies lists) and `model_dump` would build them all. Counting the expanded values on
the composed node graph (each node once, memoised) costs time linear in the file, never in the expansion. The
built-in configs use no anchors; refusing aliases altogether would be as safe but would refuse valid YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from autovid.errors import UserError

MAX_FILE_BYTES = 1 << 20  # 1 MiB: the largest built-in config is a few KiB
MAX_TEXT_CHARS = 64 << 10  # 64 KiB: one command-line override
MAX_DEPTH = 32  # nested mappings/lists, aliases followed: configs nest 4 deep
MAX_NODES = 100_000  # values of the document with every alias expanded: configs have a few hundred


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters with '...' (user text quoted back in an error stays short)."""
    return text if len(text) <= limit else text[:limit] + "..."


def read_yaml_file(path: Path, *, what: str = "config") -> Any:
    """The YAML document of the file at `path` (None when it holds no document), read as UTF-8 text of at most
    MAX_FILE_BYTES; a binary, undecodable, oversized or malformed file is a one-line UserError naming `path`."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{path}: the {what} file is larger than {MAX_FILE_BYTES // 1024} KiB, the limit of a YAML "
                        f"{what}")
    if b"\0" in raw:
        raise UserError(f"{path}: a binary file, not a YAML {what}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); a YAML "
                        f"{what} is UTF-8") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, *, source: str, max_chars: int | None = None) -> Any:
    """The single YAML document in `text`, safe-loaded (plain data, no Python objects) after checking its nesting
    depth (on the event stream, before the recursive composer could overflow) and its expanded size (on the node
    graph, before anything is built)."""
    if max_chars is not None and len(text) > max_chars:
        raise UserError(f"{source}: longer than {max_chars // 1024} KiB, the limit")
    try:
        _check_nesting(text, source)
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node, 0, {}, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML ({shorten(' '.join(str(exc).split()), 200)})") from None
    except ValueError as exc:  # a scalar Python cannot build: an integer of 5000 digits, a 13th month
        raise UserError(f"{source}: a value YAML cannot represent ({shorten(str(exc), 200)})") from None


def _check_nesting(text: str, source: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # the parser is iterative: no recursion here
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(f"{source}: nested deeper than {MAX_DEPTH} levels, the limit")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _expanded_size(node: Node, above: int, sizes: dict[int, tuple[int, int]], source: str) -> tuple[int, int]:
    """(values, nesting depth) of `node`, under `above` enclosing mappings/lists, as if every alias were copied
    out; each node is measured once. A chain of aliases nests deeper than the text shows (a recursive alias
    endlessly): the depth limit holds through them, which also bounds this recursion."""
    known = sizes.get(id(node))
    if known is not None:
        count, depth = known
    elif isinstance(node, (SequenceNode, MappingNode)):
        if above + 1 > MAX_DEPTH:
            raise UserError(f"{source}: nested deeper than {MAX_DEPTH} levels through its aliases (*name), the limit")
        children = node.value if isinstance(node, SequenceNode) else [part for pair in node.value for part in pair]
        count, depth = 1, 1
        for child in children:
            child_count, child_depth = _expanded_size(child, above + 1, sizes, source)
            count, depth = count + child_count, max(depth, child_depth + 1)
            if count > MAX_NODES:
                break
        sizes[id(node)] = (count, depth)
    else:
        count, depth = 1, 0
    if count > MAX_NODES:
        raise UserError(f"{source}: more than {MAX_NODES:,} values with its aliases (*name) expanded, the limit")
    if above + depth > MAX_DEPTH:
        raise UserError(f"{source}: nested deeper than {MAX_DEPTH} levels through its aliases (*name), the limit")
    return count, depth
