"""Core ML and ONNX targets: exports of the deploy form, their audits, and why the training form fails."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from edgevit.inspection import audit_file
from edgevit.lowering import lower
from edgevit.lowering.blocks import multi_head_attention
from edgevit.lowering.layout import get_layout
from edgevit.numerics import compare
from edgevit.recipe import get_recipe
from edgevit.runtime import host_cannot_run, open_runner
from edgevit.targets import coreml, get_target, onnx, tflite
from edgevit.targets.audit import check_gates

from .conftest import audit_path, rerun, tiny_lvt, write_exported

X = torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("class_attention", [False, True])
def test_onnx_export_of_deploy_form_runs_in_onnxruntime(tmp_path, photos_64, class_attention):
    model = tiny_lvt(class_attention)
    recipe = get_recipe("onnx-fp32")
    artifact = get_target("onnx").export(lower(model, "onnx"), X, recipe)
    audit = artifact.audit
    assert audit["max_rank"] <= 4
    assert audit["ops"]["LayerNormalization"] > 0  # the native op is kept where ONNX has it
    assert not set(audit["ops"]) & set(recipe.gates.banned_ops)
    path = tmp_path / "tiny.onnx"
    artifact.write(path)
    with torch.no_grad():
        ref = model(photos_64).numpy()
    result = compare(ref, open_runner(path, threads=2).run_batch(photos_64.numpy()))
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0


def test_training_form_onnx_needs_col2im():
    # the baseline path: it exports, but only through Col2Im (opset 18), which mobile runtimes lack
    audit = onnx.audit_onnx(onnx.export_bytes(tiny_lvt(), X))
    assert audit["ops"].get("Col2Im", 0) > 0


@pytest.fixture(scope="module")
def coreml_tiny(tiny_artifacts):
    """The shared tiny LVT in coreml-fp16: (its export's audit, path)."""
    path = tiny_artifacts[".mlpackage"]
    return json.loads(audit_path(path).read_text()), path


def test_coreml_program_has_no_banned_op_and_rank_at_most_4(coreml_tiny):
    audit, path = coreml_tiny
    recipe = get_recipe("coreml-fp16")
    assert audit["max_rank"] <= 4
    assert not set(audit["ops"]) & set(recipe.gates.banned_ops)
    assert audit["ops"]["layer_norm"] > 0 and audit["ops"]["matmul"] > 0
    assert audit["fp16_share"] > 0.9
    assert path.is_dir() and (path / "Manifest.json").is_file()
    # channels-first throughout: the keys' transposes are folded into matmul, none is left
    assert audit["transposes"] <= recipe.gates.max_transposes and audit["transposes"] == 0


def test_coreml_transpose_gate_fails_a_channels_last_graph():
    # the NHWC deploy form converts, but moves layouts around every conv and attention
    nhwc = lower(tiny_lvt(), "onnx")
    recipe = get_recipe("coreml-fp16")
    audit = coreml.export(nhwc, X, recipe).audit
    failures = check_gates(audit, None, recipe.gates, recipe.name)
    assert audit["transposes"] > recipe.gates.max_transposes
    assert any("transpose ops in the program" in f for f in failures)


def test_bare_mlpackage_audit_matches_the_export_audit(coreml_tiny):
    audit, path = coreml_tiny
    bare = audit_file(path)
    assert bare["ops"] == audit["ops"] and bare["max_rank"] == audit["max_rank"]


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predicts on macOS")
def test_coreml_prediction_is_reported_as_skipped_off_macos(coreml_tiny):
    assert "needs macOS" in host_cannot_run(coreml_tiny[1])


def test_training_form_does_not_convert_to_coreml():
    with pytest.raises(Exception, match="col2im|fold"):
        coreml.export(tiny_lvt(), X, get_recipe("coreml-fp16"))


@pytest.mark.parametrize("recipe_name", ["tflite-fp32", "tflite-fp32-nhwc"])
def test_tflite_export_is_builtin_rank_4_and_matches(tmp_path, photos_64, recipe_name):
    model = tiny_lvt()
    recipe = get_recipe(recipe_name)
    artifact = tflite.export(lower(model, "tflite"), X, recipe)
    audit = artifact.audit
    assert audit["all_builtin"] and audit["max_rank"] <= 4
    assert not set(audit["ops"]) & set(recipe.gates.banned_ops)
    # one XNNPACK partition: LiteRT's delegate takes every op (CSA stacks its nine values as three rows of three;
    # one 9-input concatenation would run outside it)
    assert audit["partitions"] == 1 and audit["ops_outside"] == {}
    assert audit["input_layout"] == recipe.options["input_layout"]
    path = tmp_path / "tiny.tflite"
    artifact.write(path)
    runner = open_runner(path, threads=2)
    with torch.no_grad():
        ref = model(photos_64).numpy()
    result = compare(ref, runner.run_batch(photos_64.numpy()))
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0


class OneHeadAttention(torch.nn.Module):
    """Single-head attention over (1, N, 8) tokens in a given deploy layout, keys and values from the same tokens."""

    def __init__(self, layout_name: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layout = get_layout(layout_name)
        self.q, self.kv = torch.nn.Linear(8, 8), torch.nn.Linear(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.kv(x)
        return multi_head_attention(self.layout, self.q(x), kv[..., :8], kv[..., 8:], heads=1)


ONE_HEAD_TOKENS = torch.randn(1, 17, 8)  # odd: the LiteRT form pads a query row (even counts: test_mmvit's layouts)


def test_tflite_one_head_attention_runs_in_one_xnnpack_partition(artifact_cache):
    # LiteRT's converter turns a one-batch q @ k^T into a FULLY_CONNECTED with the keys as its weights, which
    # its XNNPACK delegate leaves outside; the LiteRT layout runs the product as two batches of query halves
    recipe = get_recipe("tflite-fp32")

    def build(folder):
        for layout in ("tokens-last", get_target("tflite").layout):
            artifact = tflite.export(OneHeadAttention(layout), ONE_HEAD_TOKENS, recipe)
            write_exported(artifact, folder / f"{layout}.tflite")

    folder = artifact_cache.folder("one-head-attention-tflite", build)
    plain = json.loads(audit_path(folder / "tokens-last.tflite").read_text())
    assert plain["partitions"] == 2 and plain["ops"]["FULLY_CONNECTED"] == 3
    assert plain["ops_outside"] == {"FULLY_CONNECTED": 1}
    failures = check_gates(plain, None, recipe.gates, recipe.name)
    assert any("2 delegate partitions (max 1)" in f and "FULLY_CONNECTED" in f for f in failures), failures
    path = folder / f"{get_target('tflite').layout}.tflite"
    halves = json.loads(audit_path(path).read_text())
    assert halves["partitions"] == 1 and halves["ops"]["FULLY_CONNECTED"] == 2 and halves["ops_outside"] == {}
    assert not check_gates(halves, None, recipe.gates, recipe.name)
    with torch.no_grad():
        ref = OneHeadAttention("tokens-last")(ONE_HEAD_TOKENS).numpy()
        got = OneHeadAttention(get_target("tflite").layout)(ONE_HEAD_TOKENS).numpy()
    assert compare(ref, got)["max_abs_diff"] < 1e-6  # the halves form equals the plain one
    assert compare(ref, open_runner(path, threads=2).run_batch(ONE_HEAD_TOKENS.numpy()))["max_abs_diff"] < 1e-5


def test_training_form_tflite_needs_a_scatter_the_runtime_cannot_run():
    # the reference LVT converts, but only through a stablehlo scatter (its F.fold) that LiteRT rejects
    audit = tflite.export(tiny_lvt(), X, get_recipe("tflite-fp32")).audit
    assert not audit["all_builtin"]
    assert any(op.startswith("STABLEHLO") for op in audit["non_builtin_ops"])
    assert "failed to prepare" in audit["runtime_error"] and audit["partitions"] is None
    recipe = get_recipe("tflite-fp32")
    failures = check_gates(audit, None, recipe.gates, recipe.name)
    assert any("banned ops present" in f and "STABLEHLO_SCATTER" in f for f in failures)


def test_coreml_fp32_recipe_computes_in_fp32(coreml_tiny):
    audit = coreml.export(lower(tiny_lvt(), "coreml"), X, get_recipe("coreml-fp32")).audit
    assert audit["fp16_share"] == 0.0 and coreml_tiny[0]["fp16_share"] > 0.9
    assert audit["ops"] == {op: n for op, n in coreml_tiny[0]["ops"].items() if op != "cast"}


@pytest.mark.parametrize("target", ["executorch", "tflite", "onnx", "coreml"])
def test_lvt_at_full_width_exports_to_every_target(full_width, target):
    """LVT's real widths at 224 through each target's default recipe, with LVT's gates: one XNNPACK partition,
    builtin-only TFLite, Core ML with at most 20 transposes, rank <= 4; run here in each runtime that can."""
    exported = full_width("lvt", target)
    manifest, audit = exported.manifest, exported.manifest["audit"]
    assert manifest["gates"]["passed"] and audit["max_rank"] <= 4
    assert manifest["input"]["shape"][1:] in ([3, 224, 224], [224, 224, 3])
    if target == "executorch":
        assert audit["partitions"] == 1 and not audit["ops_outside"]
    if target == "tflite":
        assert audit["all_builtin"] and audit["runtime_error"] == ""
    if target in ("executorch", "tflite"):  # patch embeddings, RASA's key reduction, stage 4 (docs/lvt.md)
        assert audit["norm_means_dropped"] == 14
    if target == "coreml":
        assert audit["transposes"] <= 20 and audit["ops"]["layer_norm"] > 0
        assert manifest["numerics"]["skipped"].startswith("Core ML prediction needs macOS")
        return
    numerics = rerun(exported)  # the artifact in its runtime, in this test
    gates = get_recipe(manifest["recipe"]["name"]).gates
    assert numerics["runtime"] == manifest["numerics"]["runtime"]
    assert numerics["max_abs_diff"] <= gates.max_abs_diff and numerics["sqnr_db"] >= gates.min_sqnr_db, numerics
    assert numerics["top1_agreement"] == 1.0


def test_coreml_weight_compression(tmp_path, full_width):
    """On LVT's real weights: coremltools leaves small tensors uncompressed, so a toy would show nothing. Both
    recipes are coreml-fp16 plus one compression pass: palettize4 runs the whole export, and w8 compresses the
    shared coreml-fp16 package as the export does right after converting (one conversion fewer)."""
    import coremltools as ct

    from edgevit.fileio import path_size
    from edgevit.models import create_model

    plain = full_width("lvt", "coreml")  # the same model in coreml-fp16, shared with the test above
    assert plain.manifest["recipe"]["name"] == "coreml-fp16"
    torch.manual_seed(plain.manifest["weights"]["seed"])
    deploy = lower(create_model("lvt").eval(), "coreml")
    packed = coreml.export(deploy, torch.randn(1, 3, 224, 224), get_recipe("coreml-palettize4"))
    assert packed.audit["ops"]["constexpr_lut_to_dense"] > 50 and packed.audit["compression"] == "palettize4"
    packed.write(tmp_path / "palettized.mlpackage")

    w8 = coreml.compress(ct.models.MLModel(str(plain.artifact), skip_model_load=True), get_recipe("coreml-w8"))
    assert coreml.audit_mil(w8._mil_program)["ops"]["constexpr_affine_dequantize"] > 50
    w8.save(str(tmp_path / "w8.mlpackage"))
    for name in ("palettized", "w8"):
        assert path_size(tmp_path / f"{name}.mlpackage") < 0.6 * path_size(plain.artifact), name


def test_coreml_image_input_and_classifier_outputs():
    from dataclasses import replace

    model = lower(tiny_lvt(), "coreml")
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    labels = [f"class {i}" for i in range(10)]
    base = get_recipe("coreml-fp16")
    recipe = replace(base, options={**base.options, "image_input": True, "labels": labels, "mean": mean, "std": std})
    artifact = coreml.export(model, X, recipe)
    # the wrapper that puts normalisation inside the model is exact
    pixels = torch.rand(2, 3, 64, 64)
    wrapped = coreml.ImageClassifier(model, mean, std, softmax=False)
    normalised = (pixels - torch.tensor(mean).reshape(1, 3, 1, 1)) / torch.tensor(std).reshape(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(pixels), model(normalised), atol=1e-5, rtol=0)
    assert artifact.audit["max_rank"] <= 4 and artifact.audit["ops"]["softmax"] > 0


def test_coreml_spec_has_image_input_and_labels(tmp_path):
    from dataclasses import replace

    import coremltools as ct

    base = get_recipe("coreml-fp16")
    labels = [f"class {i}" for i in range(10)]
    recipe = replace(
        base,
        options={**base.options, "image_input": True, "labels": labels, "mean": [0.5] * 3, "std": [0.25] * 3},
    )
    path = tmp_path / "classifier.mlpackage"
    coreml.export(lower(tiny_lvt(), "coreml"), X, recipe).write(path)
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    assert [(i.name, i.type.WhichOneof("Type")) for i in spec.description.input] == [("image", "imageType")]
    assert spec.description.predictedFeatureName == "classLabel"
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    assert "normalisation is inside the model" in spec.description.input[0].shortDescription


def test_pte_with_the_coreml_delegate(tmp_path):
    from edgevit.targets import executorch as et

    recipe = get_recipe("executorch-coreml-fp16")
    artifact = et.export(lower(tiny_lvt(), recipe.options["lowering"]), X, recipe)
    assert artifact.audit["backend"] == "CoreMLBackend"
    assert artifact.audit["partitions"] == 1 and artifact.audit["ops_outside"] == {}
    path = tmp_path / "tiny-coreml.pte"
    artifact.write(path)
    assert audit_file(path)["backend"] == "CoreMLBackend"
    if sys.platform != "darwin":
        assert "Apple devices only" in host_cannot_run(path)


def test_tflite_uint8_pixel_input_normalises_inside(tmp_path, photos_64):
    from dataclasses import replace

    from edgevit.export import verify_numerics
    from edgevit.models import get_entry

    spec = get_entry("lvt").input_spec
    base = get_recipe("tflite-uint8-nhwc")
    recipe = replace(base, options={**base.options, "mean": list(spec.mean), "std": list(spec.std)})
    model = tiny_lvt()
    artifact = tflite.export(lower(model, "tflite"), X, recipe)
    assert artifact.audit["input_dtype"] == "uint8" and artifact.audit["all_builtin"]
    path = tmp_path / "pixels.tflite"
    artifact.write(path)
    runner = open_runner(path)
    assert runner.raw_pixels
    with torch.no_grad():
        ref = model(photos_64).numpy()
    # the photos are given normalised; the check feeds their exact pixel values back
    result = verify_numerics(path, ref, photos_64.numpy(), spec)
    assert result["max_abs_diff"] < 1e-4 and result["top1_agreement"] == 1.0
