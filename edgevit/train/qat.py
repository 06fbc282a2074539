"""Quantization-aware training through the target's own quantizer (PT2E ``prepare_qat_pt2e``) on the target's
deploy form, with a checkpoint after every epoch that an interrupted run resumes from."""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import fx, nn

from ..errors import EdgevitError, Interrupted, Stopped
from ..export.steps import Job, ModelSource
from ..fileio import atomic_write_json, path_sha256
from ..models.registry import Size, size_text
from ..quant.flow import QuantizedDeploy, deploy_float_modules
from ..quant.policy import untie_weights
from ..quant.pt2e import _keep_float_quantizer, backend_quantizer, quant_options
from ..targets.registry import get_target, list_targets
from .folder import LabelledImages
from .loop import accuracy, train_epoch

if TYPE_CHECKING:
    from ..recipe import Recipe

CHECKPOINT_FORMAT = "edgevit.qat/1"
# after QAT the fp32 weights are tuned for int8, so the artifact is checked against the model QAT trained
QAT_REFERENCE = "the QAT-trained model, fake-quantized, in PyTorch"


@dataclass
class QATRun:
    """What identifies a run: a checkpoint resumes only the same model, target, size and classes, from the
    same ``--init`` weights (their sha256), on the same fake-quantized graph (its fingerprint: a deploy form
    changed by another edgevit version has other nodes)."""

    model: str
    target: str
    recipe: str
    size: Size
    classes: list[str]
    init: str | None = None
    graph: str = ""

    def key(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "recipe": self.recipe,
            "size": size_text(self.size),
            "classes": self.classes,
            "init": self.init,
            "graph": self.graph,
        }


def graph_fingerprint(prepared: fx.GraphModule) -> str:
    """sha256 of the state names: they follow the graph's nodes, and observers' names follow their count."""
    return hashlib.sha256("\n".join(sorted(prepared.state_dict())).encode()).hexdigest()[:16]


def prepare_qat(deploy: nn.Module, example: torch.Tensor, target: str, options: dict, keep_float: tuple[str, ...]):
    """The deploy form exported with a dynamic batch, shared weights untied, fake-quantized for training."""
    from torch.export import Dim
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    batch = Dim("batch", min=1, max=4096)
    gm = torch.export.export(deploy, (example,), dynamic_shapes=({0: batch},), strict=False).module()
    untie_weights(gm)
    for param in gm.parameters():  # untied copies are registered frozen; QAT trains every weight
        param.requires_grad_(True)
    quantizer = backend_quantizer(target, options, qat=True)
    return prepare_qat_pt2e(gm, _keep_float_quantizer(quantizer, keep_float, (), get_target(target).float_ops))


def save_checkpoint(path: Path, run: QATRun, prepared: fx.GraphModule, optimizer, epoch: int, history: list) -> None:
    """Written beside the old one and renamed over it: an interrupt never leaves a half-written checkpoint."""
    tmp = path.with_name(f".{path.name}.partial")
    state = {
        "format": CHECKPOINT_FORMAT,
        "run": run.key(),
        "epoch": epoch,
        "model_state": prepared.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "history": history,
    }
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, run: QATRun) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise EdgevitError(
            f"cannot read QAT checkpoint {path} ({e.__class__.__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise EdgevitError(f"{path} is not an edgevit QAT checkpoint; pass another --checkpoint path")
    saved, key = state["run"], run.key()
    if saved != key and all(saved.get(f) == key[f] for f in ("model", "target", "recipe", "size", "classes")):
        if saved.get("init") != key["init"]:
            raise EdgevitError(
                f"{path} continues QAT from other --init weights; delete it or pass another --checkpoint path"
            )
        raise EdgevitError(
            f"{path} was written for another graph of {run.model} (an earlier edgevit's deploy form); "
            "delete it or pass another --checkpoint path to start over"
        )
    if saved != key:
        raise EdgevitError(
            f"{path} is a checkpoint of another run ({state['run']['model']}, {state['run']['recipe']}, "
            f"{state['run']['size']} px, {len(state['run']['classes'])} classes); pass another --checkpoint path"
        )
    return state


def train_qat(
    prepared: fx.GraphModule,
    run: QATRun,
    train: LabelledImages,
    val: LabelledImages | None,
    epochs: int,
    checkpoint: Path,
    batch: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    on_step: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Fine-tune ``prepared`` for ``epochs`` (resuming from ``checkpoint`` when it holds this run), saving after
    every epoch. Returns the per-epoch history (loss, train/val accuracy of the fake-quantized model)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    optimizer = torch.optim.AdamW([p for p in prepared.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    start, history = 0, []
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, run)
        prepared.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        start, history = state["epoch"], state["history"]
        on_step(f"resume from {checkpoint} (epoch {start} done)")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(start):  # the same shuffles as an uninterrupted run
        torch.randperm(len(train.images), generator=generator)
    for epoch in range(start, epochs):
        move_exported_model_to_train(prepared)

        def progress(step: int, steps: int, epoch: int = epoch) -> None:
            on_step(f"QAT epoch {epoch + 1}/{epochs}, batch {step}/{steps}")

        loss = train_epoch(prepared, optimizer, train.images, train.labels, batch, generator, progress)
        move_exported_model_to_eval(prepared)
        record = {"epoch": epoch + 1, "loss": round(loss, 4)}
        if val is not None:
            record["val_accuracy"] = round(accuracy(prepared, val.images, val.labels), 4)
        history.append(record)
        save_checkpoint(checkpoint, run, prepared, optimizer, epoch + 1, history)
        on_step(
            f"QAT epoch {epoch + 1}/{epochs}: loss {loss:.3f}" + (f", val {record['val_accuracy']:.1%}" if val else "")
        )
    return history


def qat_graph(
    model_name: str, init: str | Path | None, size: Size, classes: list[str], recipe: Recipe, example: torch.Tensor
) -> tuple[nn.Module, fx.GraphModule, QATRun, tuple[str, ...]]:
    """The model, its fake-quantized deploy form for ``recipe`` (as training and verify both build it), the run
    it identifies and the module names kept float."""
    from ..lowering import lower
    from ..models import create_model

    options = quant_options(recipe)
    model = create_model(model_name, init, input_size=size, num_classes=len(classes)).eval()
    deploy = lower(model, recipe.options.get("lowering", recipe.target))
    keep_float = deploy_float_modules(deploy) + tuple(options["keep_float"])
    prepared = prepare_qat(deploy, example, recipe.target, options, keep_float)
    init_sha = path_sha256(Path(init)) if init else None
    run = QATRun(model_name, recipe.target, recipe.name, size, classes, init_sha, graph_fingerprint(prepared))
    return model, prepared, run, keep_float


def rebuild_trained(manifest: dict[str, Any]) -> fx.GraphModule:
    """The fake-quantized model a QAT artifact reproduces, rebuilt from its manifest and QAT checkpoint: the
    reference ``edgevit verify`` runs (the same graph as training's, with the checkpoint's weights and ranges)."""
    from torchao.quantization.pt2e import move_exported_model_to_eval

    from ..export import manifest_input_size
    from ..models import get_entry
    from ..recipe import parse_recipe

    qat, size = manifest["quantization"]["qat"], manifest_input_size(manifest["input"])
    if qat["init"] and not Path(qat["init"]).is_file():
        raise EdgevitError(f"the QAT run's --init weights {qat['init']} (from the manifest) not found; restore them")
    example = torch.zeros(2, *get_entry(manifest["model"]).input_spec.shape(size)[1:])
    recipe = parse_recipe(manifest["recipe"], "in the manifest")
    _, prepared, run, _ = qat_graph(manifest["model"], qat["init"], size, qat["classes"], recipe, example)
    checkpoint = Path(manifest["weights"]["checkpoint"])
    try:  # the checks training resumes by: the same run, graph and --init weights
        state = load_checkpoint(checkpoint, run)
    except EdgevitError as e:
        why = str(e).split(";")[0]
        raise EdgevitError(f"cannot rebuild the QAT reference: {why}; verify with the exporting edgevit") from None
    prepared.load_state_dict(state["model_state"])
    move_exported_model_to_eval(prepared)
    return prepared


def float_twin(prepared: fx.GraphModule) -> fx.GraphModule:
    """The trained graph without its fake-quantize nodes: the fp32 model of the same weights, which exports
    like any float graph (for the fp32 size and latency comparison)."""
    twin = copy.deepcopy(prepared)
    for node in list(twin.graph.nodes):
        if node.op == "call_module" and isinstance(twin.get_submodule(node.target), _FAKE_QUANTIZE_TYPES()):
            node.replace_all_uses_with(node.args[0])
            twin.graph.erase_node(node)
    twin.graph.eliminate_dead_code()
    twin.delete_all_unused_submodules()
    twin.recompile()
    return twin


def _FAKE_QUANTIZE_TYPES() -> tuple[type, ...]:
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    return (FakeQuantizeBase,)


def convert_qat(prepared: fx.GraphModule, fold_quantize: bool) -> fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    move_exported_model_to_eval(prepared)
    # untied copies were trained apart from their originals, so none is re-tied (unlike PTQ)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)


def qat_export(
    model_name: str,
    data: str | Path,
    target: str,
    recipe: str | None = None,
    epochs: int = 3,
    checkpoint: str | Path | None = None,
    init: str | Path | None = None,
    val: str | Path | None = None,
    input_size: Size | None = None,
    batch: int = 32,
    lr: float = 1e-4,
    output_dir: str | Path = "artifacts",
    force: bool = False,
    seed: int = 0,
    on_step: Callable[[str], None] = lambda _: None,
    vs_fp32: bool = True,
):
    """QAT of ``model_name`` on an image folder for ``target``'s int8 recipe, then the gated export (with its fp32
    twin's size and latency unless ``vs_fp32`` is off)."""
    from ..export import ExportRequest, export, output_paths, resolve_recipe
    from ..fileio import refuse_overwrite
    from ..models import check_input_size, get_entry
    from .folder import load_labelled

    entry = get_entry(model_name)
    qat_recipes = {t.name: t.int8_recipe for t in list_targets() if t.int8_recipe}
    chosen = resolve_recipe(target, recipe or qat_recipes.get(target))
    options = quant_options(chosen)
    if options is None or options["scheme"] != "static" or target not in qat_recipes:
        raise EdgevitError(
            f"recipe {chosen.name} is not a static int8 PT2E recipe; QAT targets: "
            + ", ".join(f"{t} ({r})" for t, r in qat_recipes.items())
        )
    size = input_size or entry.input_spec.size
    check_input_size(model_name, size)
    if epochs < 1:
        raise EdgevitError(f"--epochs must be at least 1, got {epochs}")
    checkpoint = Path(checkpoint or Path(output_dir) / f"{model_name}-{chosen.name}.qat.pt")
    refuse_overwrite(list(output_paths(model_name, chosen, Path(output_dir))), force)  # before, not after, training

    def loading(done: int, total: int) -> None:
        on_step(f"load images {done}/{total}")

    train = load_labelled(data, entry.input_spec, size, progress=loading)
    held_out = load_labelled(val, entry.input_spec, size, train.classes, loading, "--val") if val else None
    torch.manual_seed(seed)
    on_step("prepare QAT")
    model, prepared, run, keep_float = qat_graph(model_name, init, size, train.classes, chosen, train.images[:2])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        history = train_qat(prepared, run, train, held_out, epochs, checkpoint, batch, lr, seed, on_step)
    except (KeyboardInterrupt, Stopped) as e:  # Stopped under the CLI, KeyboardInterrupt when called from Python
        done = f"epoch {load_checkpoint(checkpoint, run)['epoch']}" if checkpoint.exists() else "no epoch finished"
        error = Interrupted(f"interrupted; the last good checkpoint is {checkpoint} ({done}); rerun to resume")
        error.exit_code = getattr(e, "exit_code", Interrupted.exit_code)
        raise error from None
    trained = copy.deepcopy(prepared)  # what QAT optimised: the artifact must reproduce it
    float_deploy = float_twin(prepared)
    converted = convert_qat(prepared, fold_quantize=target != "tflite")
    quant_entry = {
        "scheme": "static, quantization-aware training",
        "weights": "int8 symmetric, " + ("per channel" if options["per_channel"] else "per tensor"),
        "activations": "int8, ranges learned in training",
        "io": options["io"],
        "keep_float": list(keep_float),
        "qat": {
            "data": str(data),
            "classes": train.classes,
            "images": len(train.images),
            "epochs": epochs,
            "batch": batch,
            "lr": lr,
            "history": history,
            "checkpoint": str(checkpoint),
            "init": str(Path(init).resolve()) if init else None,  # absolute: verify rebuilds from it
        },
    }
    request = ExportRequest(
        model_name,
        target,
        chosen.name,
        checkpoint=checkpoint,  # the manifest records the QAT checkpoint and its sha256
        input_size=size,
        output_dir=output_dir,
        force=force,
        seed=seed,
        labels=tuple(train.classes),
        vs_fp32=vs_fp32,
    )
    source = TrainedSource(trained, float_deploy, QuantizedDeploy(converted, quant_entry), model.cfg)
    result = export(request, on_step, source)
    if held_out is not None:
        on_step("held-out accuracy of the artifact")
        result.manifest["quantization"]["qat"]["val_accuracy_artifact"] = artifact_accuracy(result.artifact, held_out)
        atomic_write_json(result.manifest_path, result.manifest)
    return result, history


def artifact_accuracy(path: Path, data: LabelledImages) -> float | None:
    """Top-1 accuracy of an artifact in its own runtime; None where the host cannot run it (Core ML)."""
    from ..runtime import host_cannot_run, open_runner

    if host_cannot_run(path):
        return None
    predictions = open_runner(path).run_batch(data.images.numpy()).argmax(-1)
    return round(float((torch.from_numpy(predictions) == data.labels).float().mean()), 4)


class TrainedSource(ModelSource):
    """What QAT hands the export: the fake-quantized graph it trained (the reference the artifact must
    reproduce), the fp32 deploy form of the same weights, and the converted int8 graph."""

    reference_name = QAT_REFERENCE

    def __init__(self, trained: nn.Module, float_deploy: nn.Module, quantized: QuantizedDeploy, config: Any) -> None:
        self.trained, self.float_deploy, self.quantized, self.cfg = trained, float_deploy, quantized, config

    def check(self, job: Job) -> None:
        pass  # nothing to calibrate: the ranges were learned in training

    def build(self, job: Job) -> nn.Module:
        return self.trained

    def config(self, job: Job) -> Any:
        return self.cfg

    def lower(self, job: Job) -> nn.Module:
        return self.float_deploy

    def quantize(self, job: Job) -> QuantizedDeploy:
        return self.quantized
