"""train.pretrained: none, imagenet (offline: one clear error saying how to use a local
file) or a path to a local state-dict file (bad files: one clear error)."""

from __future__ import annotations

import pytest
import torch

from cxrprune.core.errors import CxrpruneError
from cxrprune.training.models import build_model


def _same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("fc."))


@pytest.mark.parametrize("arch", ["resnet10", "resnet18"])
def test_local_state_dict_file_loads_into_the_backbone(tmp_path, arch):
    torch.manual_seed(1)
    source = build_model(arch, 3)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(2)
    model = build_model(arch, 5, str(tmp_path / "w.pt"))
    assert _same_backbone(model, source)
    assert model.fc.out_features == 5  # the head is new, its shape may differ from the file's
    assert not _same_backbone(build_model(arch, 5), source)


@pytest.mark.parametrize("wrap", ["checkpoint", "prunecxr", "dataparallel", "no_bn_counter"])
def test_common_checkpoint_layouts_load(tmp_path, wrap):
    source = build_model("resnet10", 3)
    sd = source.state_dict()
    obj = {
        "checkpoint": {"arch": "resnet10", "classes": ["a", "b", "c"], "state_dict": sd, "epoch": 1},  # model.pt
        "prunecxr": {"weights": sd, "epoch": 7},  # the authors' chkpt.pt
        "dataparallel": {f"module.{k}": v for k, v in sd.items()},
        "no_bn_counter": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")},  # old files
    }[wrap]
    torch.save(obj, tmp_path / "w.pt")
    assert _same_backbone(build_model("resnet10", 4, str(tmp_path / "w.pt")), source)


def test_imagenet_offline_is_one_clear_error(tmp_path, monkeypatch):
    # No cached weights (empty TORCH_HOME) and every download refused at once (a proxy on
    # a closed local port), so the test never touches the network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CxrpruneError) as err:
        build_model("resnet18", 3, "imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert "train.pretrained" in message and "cannot download ImageNet weights for resnet18" in message
    assert "https://download.pytorch.org/models/resnet18-" in message  # what to fetch
    assert "set train.pretrained to the local file's path" in message  # and how to use it
    assert not list((tmp_path / "torch-home").rglob("*.pth"))  # no partial file left as if cached


def test_imagenet_weights_do_not_exist_for_resnet10():
    with pytest.raises(CxrpruneError, match="no ImageNet weights exist for resnet10"):
        build_model("resnet10", 3, "imagenet")


@pytest.mark.parametrize("content, expect", [
    (b"definitely not a torch file", "is not a readable state-dict file"),
    (b"", "empty or truncated"),
    ("tensor", "holds a Tensor, not a state dict"),
    ("module", "not plain tensors"),
    ("resnet18_into_resnet10", "weights do not fit resnet10"),
    ("resnet10_into_resnet18", "weights do not fit resnet18: missing"),
])
def test_bad_weight_files_are_one_clear_error(tmp_path, content, expect):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "module":
        torch.save(torch.nn.Linear(2, 2), path)  # a pickled module needs code to load
    elif content == "resnet18_into_resnet10":
        torch.save(build_model("resnet18", 3).state_dict(), path)
    else:
        torch.save(build_model("resnet10", 3).state_dict(), path)
    arch = "resnet18" if content == "resnet10_into_resnet18" else "resnet10"
    with pytest.raises(CxrpruneError) as err:
        build_model(arch, 3, str(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith("train.pretrained:") and expect in message, message
    if isinstance(content, bytes) or content in ("tensor", "module"):
        assert str(path) in message


def test_wrong_shapes_are_named(tmp_path):
    torch.save(build_model("resnet18", 3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(CxrpruneError) as err:
        build_model("resnet50", 3, str(tmp_path / "w.pt"))
    assert "wrong shape ['layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)'" in str(err.value)


def test_a_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(CxrpruneError, match="is neither none, imagenet nor an existing file"):
        build_model("resnet18", 3, str(tmp_path / "missing.pt"))
