"""What a user asks of one export, frozen, and the names it resolves to (recipe, artifact and manifest paths)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgevitError
from ..models.registry import Size
from ..quant.flow import QuantizeRequest
from ..recipe import Recipe, default_recipe, get_recipe
from ..targets.registry import get_target


@dataclass(frozen=True)
class ExportRequest:
    """One export: the model and its weights, the recipe, where the artifact goes, how it is verified, what the
    app's I/O looks like, the quantization inputs and which reports to add."""

    model: str
    target: str = "executorch"
    recipe: str | None = None  # a recipe name or YAML path; default: the target's default recipe
    checkpoint: str | Path | None = None
    input_size: Size | None = None
    seed: int = 0  # random init when there is no checkpoint
    # output
    output_dir: str | Path = "artifacts"
    force: bool = False
    # verification on real photos
    images: str | Path | None = None
    num_images: int = 8
    allow_gate_failures: bool = False
    # the app's I/O: class labels (a Core ML classifier), and a Core ML image input with normalisation inside
    labels: tuple[str, ...] | None = None
    image_input: bool = False
    # int8 recipes: calibration images and extra float modules
    quantize: QuantizeRequest = field(default_factory=QuantizeRequest)
    # reports: the per-block sensitivity report when an int8 artifact misses its SQNR gate, and the int8
    # artifact's size and host latency against its fp32 twin (one more export, four timed processes)
    sensitivity: bool = True
    vs_fp32: bool = True


def resolve_recipe(target: str, recipe: str | None) -> Recipe:
    """The recipe an export uses: the named one (which must build for ``target``), else the target's default."""
    chosen = default_recipe(target) if recipe is None else get_recipe(recipe)
    if chosen.target != target:
        raise EdgevitError(
            f"recipe {chosen.name} builds for target '{chosen.target}', not '{target}'; "
            f"pass --target {chosen.target} or another recipe"
        )
    return chosen


def output_paths(model_name: str, recipe: Recipe, out_dir: Path) -> tuple[Path, Path]:
    """Where an export writes its artifact and manifest."""
    stem = f"{model_name}-{recipe.name}"
    return out_dir / f"{stem}{get_target(recipe.target).suffix}", out_dir / f"{stem}.manifest.json"


def read_labels(path: str | Path) -> list[str]:
    """Class labels from a text file, one per line (blank lines ignored)."""
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise EdgevitError(f"cannot read labels file {path} ({e.__class__.__name__}); pass a UTF-8 text file") from None
    if not labels:
        raise EdgevitError(f"labels file {path} is empty; write one class label per line")
    return labels
