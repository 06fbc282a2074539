"""Checkpoint loading: every common container, safe unpickling, clear mismatch errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from edgevit.errors import EdgevitError
from edgevit.models import create_model


@pytest.fixture(scope="module")
def reference_state():
    torch.manual_seed(1)
    return create_model("lvt").state_dict()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "state_dict_ema", "module_prefix"])
def test_loads_bare_and_nested_checkpoints(tmp_path, reference_state, wrap):
    state = reference_state
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif wrap:
        obj = {wrap: state, "epoch": 300}
    else:
        obj = state
    path = tmp_path / "lvt.pth.tar"
    torch.save(obj, path)
    model = create_model("lvt", checkpoint=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_loads_safetensors(tmp_path, reference_state):
    path = tmp_path / "lvt.safetensors"
    save_file({k: v.contiguous() for k, v in reference_state.items()}, str(path))
    model = create_model("lvt", checkpoint=path)
    assert torch.equal(model.state_dict()["head.weight"], reference_state["head.weight"])


def test_mismatch_lists_missing_and_unexpected_keys(tmp_path, reference_state):
    path = tmp_path / "lvt.pth"
    torch.save(reference_state, path)
    with pytest.raises(EdgevitError, match=r"missing \(.*cls_token"):
        create_model("lvt_cls", checkpoint=path)
    state = dict(reference_state)
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(EdgevitError, match=r"1 missing \(head.bias\); 1 unexpected \(extra.weight\)"):
        create_model("lvt", checkpoint=path)


def test_fine_tuned_checkpoint_sets_the_number_of_classes(tmp_path):
    torch.manual_seed(2)
    tuned = create_model("lvt", num_classes=10)
    path = tmp_path / "tuned.pth"
    torch.save(tuned.state_dict(), path)
    model = create_model("lvt", checkpoint=path).eval()
    assert model.num_classes == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tuned.eval()(x))


def test_shape_mismatch_is_named(tmp_path, reference_state):
    state = dict(reference_state)
    state["norm.weight"] = torch.zeros(10)
    path = tmp_path / "lvt.pth"
    torch.save(state, path)
    with pytest.raises(EdgevitError, match="norm.weight"):
        create_model("lvt", checkpoint=path)


class NotATensor:
    pass


def test_refuses_arbitrary_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(EdgevitError, match="tensors only"):
        create_model("lvt", checkpoint=path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EdgevitError, match="broken"):
        create_model("lvt", checkpoint=path)


def test_missing_file(tmp_path):
    with pytest.raises(EdgevitError, match="not found"):
        create_model("lvt", checkpoint=tmp_path / "nope.pth")
