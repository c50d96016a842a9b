"""``pi plugins``, ``pi configs`` and ``pi embodiments``: what is installed."""

import json
from typing import Any

import attrs
import click

from openpi_core.errors import UnknownNameError
from openpi_core.plugins import get_embodiment, get_plugin_manager
from openpi_core.schema import ArraySpec
from openpi_core.transforms import Group


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in [headers, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(lines)


def _summary(registered: dict[str, list[str]]) -> str:
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in sorted(registered.items())) or "-"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins(as_json: bool) -> None:
    """List installed plugins: distribution, version, what each registered.

    Plugins that failed to load are listed with their error.
    """
    infos = get_plugin_manager().plugins()
    if as_json:
        click.echo(json.dumps([attrs.asdict(info) for info in infos], indent=2))
        return
    if not infos:
        click.echo("no plugins installed")
        return
    rows = [
        [
            info.name,
            info.distribution or "-",
            info.version or "-",
            f"FAILED: {info.error}" if info.error else _summary(info.registered),
        ]
        for info in infos
    ]
    click.echo(_table(["plugin", "distribution", "version", "registered"], rows))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (shape below).")
def configs(as_json: bool) -> None:
    """List named configs (presets).

    \b
    --json prints a list of {"name", "family", "embodiment", "description", "checkpoint",
    "norm_stats", "default_prompt", "plugin"}, sorted by name.
    """
    registry = get_plugin_manager().registry("config")
    if as_json:
        keys = ("family", "embodiment", "description", "checkpoint", "norm_stats", "default_prompt")
        rows = [
            {"name": name, **{key: getattr(entry.item, key) for key in keys}, "plugin": entry.plugin}
            for name, entry in sorted(registry.entries.items())
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not registry.entries:
        click.echo("no named configs installed")
        return
    rows = [
        [name, entry.item.family, entry.item.embodiment, entry.item.description]
        for name, entry in sorted(registry.entries.items())
    ]
    click.echo(_table(["config", "model", "embodiment", "description"], rows))


@click.group()
def embodiments() -> None:
    """Inspect installed robots."""


@embodiments.command("list")
def list_embodiments() -> None:
    """List installed embodiments."""
    registry = get_plugin_manager().registry("embodiment")
    rows = [[name, entry.plugin, entry.item.description] for name, entry in sorted(registry.entries.items())]
    click.echo(_table(["embodiment", "plugin", "description"], rows) if rows else "no embodiments installed")


def _describe_transforms(group: Group) -> list[str]:
    return [f"  in:  {_transform_name(t)}" for t in group.inputs] + [
        f"  out: {_transform_name(t)}" for t in group.outputs
    ]


DTYPE_KIND_WORDS = {"b": "bool", "i": "int", "u": "uint", "f": "float", "c": "complex", "U": "str", "S": "bytes"}
"""Words for numpy dtype kind letters, as ``pi embodiments show`` prints them."""


def dtype_kinds_in_words(kinds: str) -> str:
    """``"uf"`` -> ``"uint or float"``, ``"fiu"`` -> ``"float, int or uint"`` (in the spec's order)."""
    words = [DTYPE_KIND_WORDS.get(kind, repr(kind)) for kind in kinds]
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _describe_spec(spec: ArraySpec) -> str:
    """``[3, *, *] uint or float``, then ``(optional)`` and the description."""
    dims = ", ".join("*" if dim is None else str(dim) for dim in spec.shape)
    line = f"[{dims}] {dtype_kinds_in_words(spec.dtype_kind)}"
    if not spec.required:
        line += " (optional)"
    return f"{line} - {spec.description}" if spec.description else line


def _transform_name(transform: Any) -> str:
    return repr(transform) if attrs.has(type(transform)) else type(transform).__name__


@embodiments.command("show")
@click.argument("name")
@click.option("--family", default="pi0", show_default=True, help="Model family whose transforms to show.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON (shape below).")
def show_embodiment(name: str, family: str, as_json: bool) -> None:
    """Show an embodiment's observation schema and transforms.

    \b
    --json prints {"name", "description", "action_dim", "default_prompt",
    "observation_schema": {KEY: {"shape": [int or null], "dtype_kind", "required", "description"}},
    "family", "transforms": {"inputs": [...], "outputs": [...]}}.
    """
    try:
        embodiment = get_embodiment(name)
    except UnknownNameError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        group = embodiment.transforms(family)
        schema_keys = ("shape", "dtype_kind", "required", "description")
        shown = {
            "name": embodiment.name,
            "description": embodiment.description,
            "action_dim": embodiment.action_dim,
            "default_prompt": embodiment.default_prompt,
            "observation_schema": {
                key: {field: getattr(spec, field) for field in schema_keys}
                for key, spec in embodiment.observation_schema.items()
            },
            "family": family,
            "transforms": {
                "inputs": [_transform_name(t) for t in group.inputs],
                "outputs": [_transform_name(t) for t in group.outputs],
            },
        }
        click.echo(json.dumps(shown, indent=2))
        return
    click.echo(f"{embodiment.name}: {embodiment.description}")
    click.echo(f"action dim: {embodiment.action_dim}")
    click.echo(f"default prompt: {embodiment.default_prompt!r}")
    click.echo("observation schema:")
    for key, spec in embodiment.observation_schema.items():
        click.echo(f"  {key}: {_describe_spec(spec)}")
    click.echo(f"transforms for {family}:")
    for line in _describe_transforms(embodiment.transforms(family)):
        click.echo(line)
