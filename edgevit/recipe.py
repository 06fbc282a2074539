"""Recipes: a named, validated (target, precision, options, gates) bundle, built in or from a user's YAML."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import EdgevitError
from .fileio import read_yaml
from .targets.registry import get_target, list_targets, target_names

# the top-level recipes/ folder, shipped as this package (a real folder in both wheel and editable installs)
RECIPE_DIR = Path(str(resources.files("edgevit.recipes")))
PRECISIONS = ("fp32", "fp16", "int8", "w8", "w8a8", "palettize4", "dynamic-int8")


@dataclass(frozen=True)
class Gates:
    """Thresholds an artifact must meet; ``None`` means not checked."""

    max_partitions: int | None = None
    max_ops_outside: int | None = None
    max_rank: int | None = None
    max_transposes: int | None = None  # layout copies in the program (each one a memory copy on the NE)
    banned_ops: tuple[str, ...] = ()
    max_abs_diff: float | None = None
    min_sqnr_db: float | None = None


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str
    precision: str
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    gates: Gates = field(default_factory=Gates)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        g = {f.name: getattr(self.gates, f.name) for f in fields(Gates)}
        g["banned_ops"] = list(self.gates.banned_ops)
        return {
            "name": self.name,
            "target": self.target,
            "precision": self.precision,
            "description": self.description,
            "options": self.options,
            "gates": g,
        }


def _fail(src: str, msg: str) -> EdgevitError:
    return EdgevitError(f"recipe {src}: {msg}")


def _parse_gates(raw: Any, src: str) -> Gates:
    if raw is None:
        return Gates()
    if not isinstance(raw, dict):
        raise _fail(src, "field 'gates' must be a mapping of gate name to threshold")
    known = {f.name: f for f in fields(Gates)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise _fail(src, f"unknown gate '{key}'; known gates: {', '.join(known)}")
        if key == "banned_ops":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _fail(src, "gate 'banned_ops' must be a list of op names")
            values[key] = tuple(value)
        elif value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(src, f"gate '{key}' must be a number, got {value!r}")
            if key.startswith("max_") and key != "max_abs_diff" and (value < 0 or int(value) != value):
                raise _fail(src, f"gate '{key}' must be a non-negative integer, got {value!r}")
            values[key] = float(value) if key in ("max_abs_diff", "min_sqnr_db") else int(value)
    return Gates(**values)


_COMMON_OPTIONS = frozenset({"quantization", "lowering"})


def parse_recipe(raw: Any, src: str) -> Recipe:
    """Validate a recipe mapping; errors name the field and what it should be."""
    if not isinstance(raw, dict):
        raise _fail(src, "must be a YAML mapping with at least 'name', 'target' and 'precision'")
    allowed = {"name", "target", "precision", "description", "options", "gates"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise _fail(src, f"unknown field '{extra[0]}'; allowed fields: {', '.join(sorted(allowed))}")
    for key in ("name", "target", "precision"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _fail(src, f"field '{key}' is required and must be a string")
    targets = target_names()
    if raw["target"] not in targets:
        raise _fail(src, f"field 'target' is '{raw['target']}'; choose one of: {', '.join(targets)}")
    if raw["precision"] not in PRECISIONS:
        raise _fail(src, f"field 'precision' is '{raw['precision']}'; choose one of: {', '.join(PRECISIONS)}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise _fail(src, "field 'options' must be a mapping")
    known = _COMMON_OPTIONS | get_target(raw["target"]).recipe_options
    unknown = sorted(set(options) - known)
    if unknown:
        raise _fail(
            src, f"unknown option '{unknown[0]}' for target {raw['target']}; known options: {', '.join(sorted(known))}"
        )
    return Recipe(
        name=raw["name"],
        target=raw["target"],
        precision=raw["precision"],
        description=str(raw.get("description") or ""),
        options=options,
        gates=_parse_gates(raw.get("gates"), src),
        source=src,
    )


def _load_file(path: Path) -> Recipe:
    raw = read_yaml(path, "recipe", "fix the file or pick a built-in recipe")
    return parse_recipe(raw, str(path))


def builtin_recipes() -> dict[str, Recipe]:
    recipes = (_load_file(p) for p in sorted(RECIPE_DIR.glob("*.yaml")))
    return {r.name: r for r in recipes}


def get_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a user's recipe from a YAML path."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return _load_file(Path(name_or_path))
    recipes = builtin_recipes()
    if name_or_path not in recipes:
        raise EdgevitError(
            f"unknown recipe '{name_or_path}'; choose one of: {', '.join(recipes)} (see `edgevit recipes`) "
            "or pass a YAML file"
        )
    return recipes[name_or_path]


def default_recipe(target: str) -> Recipe:
    """The recipe a target exports with when none is named."""
    return get_recipe(get_target(target).default_recipe)


def default_recipe_names() -> set[str]:
    return {t.default_recipe for t in list_targets()}


def recipe_gates(raw: dict[str, Any]) -> Gates:
    """The gates of a recipe as a manifest records them (``Recipe.to_dict()['gates']``)."""
    return _parse_gates(raw, "in the manifest")
