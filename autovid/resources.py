"""Locate the YAML folders (search_spaces/, tune_configs/, baselines/) in a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

from autovid.errors import UserError

RESOURCE_KINDS = ("search_spaces", "tune_configs", "baselines")


def resource_dir(kind: str) -> Path:
    """The folder holding the built-in YAML files of one kind.

    A wheel ships them inside the package (``autovid/_resources/<kind>``, see pyproject.toml); a source
    checkout (editable install) keeps them at the repository's top level.
    """
    if kind not in RESOURCE_KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; valid: {', '.join(RESOURCE_KINDS)}")
    packaged = Path(__file__).parent / "_resources" / kind
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / kind


def list_resources(kind: str) -> list[str]:
    """Names (file stems) of the built-in YAML files of one kind."""
    return sorted(p.stem for p in resource_dir(kind).glob("*.yaml"))


def resource_path(kind: str, name_or_path: str | Path) -> Path:
    """Resolve a built-in name (``quickstart``) or a file path to an existing YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise UserError(f"{kind[:-1].replace('_', ' ')} file not found: {candidate}")
        return candidate
    builtin = resource_dir(kind) / f"{name_or_path}.yaml"
    if not builtin.is_file():
        valid = ", ".join(list_resources(kind)) or "(none)"
        raise UserError(f"unknown {kind[:-1].replace('_', ' ')} {str(name_or_path)!r}; built-in names: {valid}")
    return builtin
