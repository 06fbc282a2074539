"""``edgevit models`` and ``edgevit recipes``: what can be exported, and how."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from .console import out, progress


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the models: parameters, MACs at the default input size, default input size.

    The first run builds every model to count them (seconds); later runs read the figures from the user's
    cache (~/.cache/edgevit), which a change of the model code or of torch renews."""
    from ..models import list_models, size_text
    from ..models.stats import cached_model_stats

    with progress() as step:
        rows = cached_model_stats(list_models(), lambda name: step(f"counting parameters and MACs: {name}"))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("model", "params (M)", "GMACs", "input", "description")
    for r in rows:
        size = size_text(r["input_size"] if isinstance(r["input_size"], int) else tuple(r["input_size"]))
        table.add_row(r["name"], f"{r['params_m']:.3f}", f"{r['gmacs']:.3f}", size, r["description"])
    out.print(table)


def recipes(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the built-in recipes: target, precision, default, main gates; --json gives every option and gate."""
    from ..recipe import builtin_recipes, default_recipe_names

    items = builtin_recipes()
    if as_json:
        print(json.dumps([r.to_dict() for r in items.values()], indent=2))
        return
    table = Table("recipe", "target", "precision", "default", "gates", "description")
    defaults = default_recipe_names()
    for r in items.values():
        default = "yes" if r.name in defaults else ""
        table.add_row(r.name, r.target, r.precision, default, _main_gates(r.gates), r.description)
    out.print(table)


def _main_gates(gates) -> str:
    """The gates a user compares recipes by: delegate partitions and numerics against PyTorch fp32."""
    parts = []
    if gates.max_partitions is not None:
        parts.append(f"<= {gates.max_partitions} partition{'s' if gates.max_partitions != 1 else ''}")
    if gates.min_sqnr_db is not None:
        parts.append(f">= {gates.min_sqnr_db:g} dB")
    if gates.max_abs_diff is not None:
        parts.append(f"diff <= {gates.max_abs_diff:g}")
    return ", ".join(parts)
