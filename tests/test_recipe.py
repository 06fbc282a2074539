"""Recipe schema: built-ins load, user YAML works the same way, bad fields are named."""

from __future__ import annotations

import pytest

from edgevit.errors import EdgevitError
from edgevit.recipe import builtin_recipes, default_recipe, get_recipe


def test_builtin_default_recipe():
    recipe = default_recipe("executorch")
    assert recipe.name == "executorch-xnnpack-fp32" and recipe.target == "executorch"
    assert recipe.gates.max_partitions == 1 and recipe.gates.max_ops_outside == 0
    assert "executorch-xnnpack-fp32" in builtin_recipes()


def test_user_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntarget: executorch\nprecision: fp32\ngates: {max_partitions: 3}\n")
    recipe = get_recipe(str(path))
    assert recipe.name == "mine" and recipe.gates.max_partitions == 3 and recipe.gates.max_rank is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("target: executorch\nprecision: fp32\n", "field 'name' is required"),
        ("name: x\ntarget: tensorrt\nprecision: fp32\n", "field 'target' is 'tensorrt'"),
        ("name: x\ntarget: executorch\nprecision: int3\n", "field 'precision' is 'int3'"),
        (
            "name: x\ntarget: executorch\nprecision: fp32\ngates: {max_partitions: -1}\n",
            "non-negative integer",
        ),
        ("name: x\ntarget: executorch\nprecision: fp32\ngates: {speed: 1}\n", "unknown gate 'speed'"),
        ("name: x\ntarget: executorch\nprecision: fp32\ncolour: red\n", "unknown field 'colour'"),
        ("name: x\ntarget: onnx\nprecision: fp32\noptions: {bogus: 3}\n", "unknown option 'bogus' for target onnx"),
        ("name: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a YAML mapping"),
    ],
)
def test_schema_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(EdgevitError, match=message):
        get_recipe(str(path))


def test_unknown_recipe_lists_known():
    with pytest.raises(EdgevitError, match="executorch-xnnpack-fp32"):
        get_recipe("executorch-magic")
