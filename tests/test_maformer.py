"""MAFormer: the variants fit their budgets and every open choice has its reason; checkpoints load with strict
keys at the size they were trained at and are refused in one line at another; each deploy-form rewrite equals what
it replaces; the tiny registered variant on every target with LVT's gates; maformer_tiny's widths through XNNPACK."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from edgevit.data import load_images
from edgevit.lowering import layout_for, lower
from edgevit.lowering.maformer import DeployGLD, DeployMAFBlock, Windows
from edgevit.models import create_model, get_entry
from edgevit.models import maformer as train
from edgevit.models.stats import model_stats

from .conftest import assert_learns, assert_traces_at_any_batch, check_gates, rerun, run_cli_here

EACH_LAYOUT = pytest.mark.parametrize("target", ["executorch", "coreml"])


def _as_layout(tokens: torch.Tensor, target: str) -> torch.Tensor:
    """(B, N, C) tokens as the layout of ``target`` holds them."""
    return tokens.transpose(1, 2).unsqueeze(2) if layout_for(target).channels_first else tokens


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Random weights away from init (zero biases and unit norms hide mistakes)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return module.eval()


@pytest.mark.parametrize("name,params,gmacs", [("maformer_tiny", 5.0, 0.9), ("maformer_small", 30.0, 6.0)])
def test_variants_fit_their_budgets(name, params, gmacs):
    stats = model_stats(name)
    assert stats["params_m"] <= params and stats["gmacs"] <= gmacs, stats
    model = create_model(name)
    kinds = [{type(b).__name__ for b in stage.blocks} for stage in model.stages]
    assert kinds == [{"MAFBlock"}, {"MAFBlock"}, {"Block"}, {"Block"}]  # MAF early, plain transformer late


def test_every_open_choice_has_a_reason():
    reasons = train.MAFormerConfig.reasons()
    for name in ("dims", "depths", "heads", "window", "global_grids", "pos_grid", "fusion_residual"):
        assert len(reasons[name]) > 20, name


def test_train_mode_learns():
    assert_learns(create_model("maformer_test"), 64)


def test_checkpoints_load_with_strict_keys_at_their_size_and_are_refused_at_another(tmp_path):
    model = _perturbed(create_model("maformer_test", num_classes=7))
    path = tmp_path / "maformer_test.pth"
    torch.save({"model": model.state_dict()}, path)
    loaded = create_model("maformer_test", path).eval()  # strict keys: a mismatch raises
    assert loaded.num_classes == 7
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    # the token-axis FC is learned for 256 stage-1 tokens: at 96 px it would read 576
    proc = run_cli_here(
        "export", "maformer_test", "--checkpoint", str(path), "--input-size", "96", "--output-dir", str(tmp_path / "o")
    )
    assert proc.returncode == 2 and "trained for 256 tokens" in proc.stderr and "--input-size" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("grid,window", [((14, 14), 7), ((16, 12), 7), ((8, 8), 3)], ids=["whole", "padded", "small"])
@EACH_LAYOUT
def test_windows_at_rank_4_equal_the_rank_6_partition(target, grid, window):
    """Partition as attention reads it and back: the training form's 6-D view and permute, padded alike."""
    B, C = 2, 6
    x = torch.randn(B, grid[0] * grid[1], C)
    windows = Windows(grid, window, layout_for(target))
    Hp, Wp = windows.padded
    padded = torch.nn.functional.pad(x.reshape(B, *grid, C), (0, 0, 0, Wp - grid[1], 0, Hp - grid[0]))
    expected = train.window_partition(padded, window)  # (B*nW, w*w, C)
    got = windows.partition(windows.pad(_as_layout(x, target)))
    if layout_for(target).channels_first:  # (B*nW, C, 1, w*w)
        got = got.squeeze(2).transpose(1, 2)
    assert torch.equal(got, expected)
    back = windows.crop(windows.reverse(windows.partition(windows.pad(_as_layout(x, target)))))
    assert torch.equal(back, _as_layout(x, target))


@EACH_LAYOUT
def test_gld_is_a_linear_and_one_constant(target):
    """The token-axis FC and the interpolated position embedding (2x2 learned, 4x4 used) without interpolation."""
    gld = _perturbed(train.GlobalDownsampling(8, 36, (4, 4), (2, 2)))
    x = torch.randn(2, 36, 8)
    deploy = DeployGLD(gld, layout_for(target))
    with torch.no_grad():
        torch.testing.assert_close(deploy(_as_layout(x, target)), _as_layout(gld(x), target), atol=1e-5, rtol=0)
    program = torch.export.export(deploy, (_as_layout(x, target),))
    assert not any("interpolate" in str(n.target) or "upsample" in str(n.target) for n in program.graph.nodes)


@pytest.mark.parametrize("grid,window,heads", [((8, 8), 4, 1), ((6, 10), 4, 2)], ids=["whole", "padded"])
@EACH_LAYOUT
def test_deploy_maf_block_equals_maf_block(target, grid, window, heads):
    cfg = replace(train.MAFormerConfig(), window=window, pos_grid=(2, 2))
    block = _perturbed(train.MAFBlock(16, heads, grid, (3, 3), cfg, 0.0))
    x = torch.randn(2, grid[0] * grid[1], 16)
    with torch.no_grad():
        got = DeployMAFBlock(block, layout_for(target))(_as_layout(x, target))
        torch.testing.assert_close(got, _as_layout(block(x), target), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,size", [("maformer_test", 64), ("maformer_tiny", 224)])
def test_whole_model_deploy_forms_match_on_real_photos(name, size):
    model = _perturbed(create_model(name))
    images = load_images(None, get_entry(name).input_spec, size, limit=4)
    with torch.no_grad():
        reference = model(images)
        for target in ("executorch", "tflite", "onnx", "coreml"):
            torch.testing.assert_close(lower(model, target)(images), reference, atol=1e-4, rtol=0)


def test_deploy_form_refuses_another_input_size():
    deploy = lower(create_model("maformer_test"), "executorch")
    with pytest.raises(ValueError, match="GLD token FC fixes the size"):
        deploy(torch.randn(1, 3, 96, 96))


def test_the_deploy_form_traces_at_any_batch_without_repeat_or_expand():
    assert_traces_at_any_batch(create_model("maformer_test").eval(), 64)


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx", "coreml"])
def test_maformer_exports_to_every_target(artifact_cache, target):
    """The family's tiny registered variant: padded windows in both MAF stages, GLD with an interpolated
    position embedding, plain blocks after."""
    exported = artifact_cache.export("maformer_test", target)
    manifest = exported.manifest
    assert manifest["gates"]["passed"], manifest["gates"]
    check_gates({target: manifest})
    assert manifest["input"]["shape"] == [1, 3, 64, 64]
    if target == "coreml":  # two transposes into each MAF block's windows and two back
        assert manifest["audit"]["transposes"] <= 4 * 2, manifest["audit"]
    else:  # the artifact in its runtime, in this test
        numerics = rerun(exported)
        assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_maformer_tiny_widths_are_one_xnnpack_partition(tmp_path):
    """maformer_tiny's widths, heads, windows and GLD at 224 through XNNPACK, the strictest delegation gate, run
    here; one block per stage (the variant repeats them, which adds nodes to export, not kinds; `make bench`
    exports the real depth)."""
    from edgevit.numerics import compare
    from edgevit.recipe import get_recipe
    from edgevit.runtime import open_runner
    from edgevit.targets import executorch as et

    photos = load_images(None, get_entry("maformer_tiny").input_spec, 224, limit=2)
    model = _perturbed(train.MAFormer(replace(train.MAFORMER_CONFIGS["maformer_tiny"], depths=(1, 1, 1, 1))))
    exported = et.export(lower(model, "executorch"), photos[:1], get_recipe("executorch-xnnpack-fp32"))
    audit = exported.audit
    assert audit["partitions"] == 1 and not audit["ops_outside"] and audit["max_rank"] <= 4, audit
    exported.write(tmp_path / "maformer_tiny.pte")
    got = open_runner(tmp_path / "maformer_tiny.pte").run_batch(photos.numpy())
    with torch.no_grad():
        numerics = compare(model(photos).numpy(), got)
    assert numerics["max_abs_diff"] < 1e-3 and numerics["top1_agreement"] == 1.0, numerics


def test_qat_observes_tensors_only():
    """Under QAT's dynamic batch the windows' batch is a symbolic product (batch x windows); LiteRT's quantizer
    annotates that Python multiplication as a ``mul``, and a fake quantizer on an int fails the first step."""
    from edgevit.quant.flow import quant_options
    from edgevit.recipe import get_recipe
    from edgevit.train.qat import prepare_qat

    recipe = get_recipe("tflite-int8")
    deploy = lower(create_model("maformer_test"), "tflite")
    prepared = prepare_qat(deploy, torch.randn(2, 3, 64, 64), "tflite", quant_options(recipe), ())
    observed = [n.args[0] for n in prepared.graph.nodes if n.op == "call_module" and "post_process" in str(n.target)]
    assert observed and all(isinstance(n.meta.get("val"), torch.Tensor) for n in observed)
    prepared(torch.randn(3, 3, 64, 64))  # a training-mode step's forward at another batch
