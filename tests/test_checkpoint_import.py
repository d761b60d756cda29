"""Bring your own checkpoint (``model.source: checkpoint``): real torchvision models saved the
ways users save them, imported, their outputs mapped onto the dataset's classes by name, and
checked against the original module's own forward pass; every bad file is one clear error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cxrprune.core import config
from cxrprune.core.errors import ConfigError, CxrpruneError
from cxrprune.training.checkpoint import import_checkpoint

CLASSES = ["Atelectasis", "Effusion", "Hernia", "Mass", "Nodule"]
SIZE = 32


def torchvision_model(arch: str, classes: list[str]) -> nn.Module:
    """A torchvision model with its head replaced for ``classes``, as a deployer's would be."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    if arch == "densenet121":
        model.classifier = nn.Linear(model.classifier.in_features, len(classes))
    else:
        model.fc = nn.Linear(model.fc.in_features, len(classes))
    return model.eval()


def same_outputs(imported: nn.Module, original: nn.Module, order: list[int]) -> None:
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np_imported, np_original = imported.eval()(x), original.eval()(x)
    torch.testing.assert_close(np_imported, np_original[:, order], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,whole", [("resnet18", False), ("densenet121", True)])
def test_saved_torchvision_models_import_with_their_classes_mapped_by_name(tmp_path, arch, whole):
    """The file's outputs are in another order than the dataset's: the imported model's
    column c is the original's output named CLASSES[c]."""
    file_order = ["Mass", "Atelectasis", "Nodule", "Hernia", "Effusion"]
    original = torchvision_model(arch, file_order)
    path = tmp_path / "model.pt"
    torch.save(original if whole else {"state_dict": original.state_dict(), "epoch": 30}, path)
    got = import_checkpoint(path, arch, CLASSES, file_order, SIZE)
    same_outputs(got.model, original, [file_order.index(c) for c in CLASSES])
    assert got.file_classes == file_order and len(got.md5) == 32


def test_names_stored_in_the_file_are_used_and_dataparallel_prefixes_dropped(tmp_path):
    original = torchvision_model("resnet18", CLASSES[::-1])
    state = {f"module.{k}": v for k, v in original.state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save({"state_dict": state, "classes": CLASSES[::-1]}, path)
    got = import_checkpoint(path, "resnet18", CLASSES, [], SIZE)
    same_outputs(got.model, original, list(range(len(CLASSES)))[::-1])


def one_error(path, arch="resnet18", named=CLASSES, classes=CLASSES) -> str:
    with pytest.raises(CxrpruneError) as info:
        import_checkpoint(path, arch, classes, named, SIZE)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_classes_that_differ_are_one_error_listing_both_sides(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torchvision_model("resnet18", CLASSES).state_dict(), path)
    text = one_error(path, named=["Atelectasis", "Effusion", "Hernia", "Mass", "Pneumonia"])
    assert "lacks ['Nodule']" in text and "data lacks ['Pneumonia']" in text and "model.classes" in text


def test_a_file_without_names_and_no_model_classes_asks_for_them(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torchvision_model("resnet18", CLASSES).state_dict(), path)
    assert "stores no class names" in one_error(path, named=[])


def test_a_corrupted_file_is_one_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torchvision_model("resnet18", CLASSES).state_dict(), path)
    path.write_bytes(path.read_bytes()[: 5000])
    assert "model.path" in one_error(path)


def test_a_wrong_architecture_is_one_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torchvision_model("resnet18", CLASSES).state_dict(), path)
    text = one_error(path, arch="resnet34")
    assert "does not fit train.arch resnet34" in text


def test_a_head_of_another_architecture_is_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torchvision_model("resnet18", CLASSES).state_dict(), path)
    assert "not a densenet121 classifier" in one_error(path, arch="densenet121")


class Custom(nn.Module):  # a class of the user's own: loading it would run its code
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_a_module_of_unknown_code_is_refused_not_run(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(Custom(), path)
    text = one_error(path)
    assert "would run code of" in text and "Custom" in text


def test_a_missing_file_is_named(tmp_path):
    assert "does not exist" in one_error(tmp_path / "absent.pt")


def test_config_requires_a_path_and_one_seed():
    with pytest.raises(ConfigError, match="model.path"):
        config.from_dict({"model": {"source": "checkpoint"}})
    with pytest.raises(ConfigError, match="one seed"):
        config.from_dict({"seeds": [0, 1], "model": {"source": "checkpoint", "path": "m.pt"}})
    assert config.from_dict({"seeds": [0], "model": {"source": "checkpoint", "path": "m.pt"}}).model.path == "m.pt"


@pytest.mark.slow
def test_an_imported_torchvision_checkpoint_is_audited_end_to_end(tiny_study, tmp_path):
    """``dvc repro`` with ``model.source: checkpoint`` on a copy of the tiny study: train@0
    imports a torchvision ResNet18 whose outputs are in reverse order, and every later stage
    runs on it. The dense predictions equal the original module's own forward pass on the
    test images (mapped by name), every class's AP equals scikit-learn's on the prediction
    table, and the MLflow run names the file's md5."""
    import hashlib
    import json

    import mlflow
    import numpy as np
    import pandas as pd
    import yaml
    from sklearn.metrics import average_precision_score
    from workspaces import copy_workspace, run, stages_run

    from cxrprune.training.augment import normalize, to_unit

    ws = copy_workspace(tiny_study[0], tmp_path / "ws")
    classes = json.loads((ws / "data/prepared/synthetic/meta.json").read_text())["classes"]
    file_order = classes[::-1]
    original = torchvision_model("resnet18", file_order)
    (ws / "audit").mkdir()
    torch.save(original.state_dict(), ws / "audit/resnet18.pt")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seeds"] = [0]
    params["train"]["arch"] = "resnet18"
    params["model"] = {"source": "checkpoint", "path": "audit/resnet18.pt", "classes": file_order}
    # The paper's two methods: every stage after train@0 runs on the imported model either way, and
    # l1's blocks are what the oracles below recompute. Channel pruning and int8 (most of this
    # test's prune time on a ResNet18) are test_compression_methods.py's, on a ResNet of the same
    # BasicBlocks, and the shared tiny study's, end to end.
    params["prune"]["methods"] = ["l1", "random"]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "add", "audit/resnet18.pt"], ws)  # the README's commands, in its order
    assert (ws / "audit/resnet18.pt.dvc").is_file()
    ran = stages_run(run(["dvc", "repro"], ws))
    assert {"train@0", "prune@0", "evaluate", "analyze", "report"} <= ran and "train@1" not in ran

    preds = pd.read_parquet(ws / "data/predictions/synthetic/seed-0.parquet")
    dense = preds[(preds["method"] == "l1") & (preds["sparsity"] == 0.0)]
    images = torch.from_numpy(np.load(ws / "data/prepared/synthetic/images_test.npy"))
    with torch.no_grad():
        expected = torch.sigmoid(original(normalize(to_unit(images, torch.device("cpu"))))).numpy()
    order = [file_order.index(c) for c in classes]
    np.testing.assert_allclose(dense[classes].to_numpy(), expected[:, order], rtol=1e-4, atol=1e-5)

    labels = pd.read_parquet(ws / "data/prepared/synthetic/labels_test.parquet")
    per_class = pd.read_csv(ws / "metrics/synthetic/per_class.csv")
    block = preds[(preds["method"] == "l1") & (preds["sparsity"] == 0.5)]
    got = per_class[(per_class["method"] == "l1") & (per_class["level"] == 0.5)].set_index("class_name")
    for c in classes:
        want = average_precision_score(labels[c], block[c])
        assert got.loc[c, "ap"] == pytest.approx(want, rel=1e-6), c

    # The deployment page's per-disease losses equal a recomputation from the prediction table:
    # the relative AP change of each compressed block against the dense block (one model).
    assert "deployment" in ran
    page = json.loads((ws / "reports/synthetic/deployment.json").read_text())
    tolerance = page["class_tolerance"]
    dense_ap = {c: average_precision_score(labels[c], dense[c]) for c in classes}
    checked = 0
    for row in page["losses"]:
        blk = preds[(preds["method"] == row["method"]) & (np.isclose(preds["sparsity"], row["level"]))]
        want = (average_precision_score(labels[row["class_name"]], blk[row["class_name"]])
                - dense_ap[row["class_name"]]) / dense_ap[row["class_name"]]
        assert row["median_rel_dap"] == pytest.approx(want, rel=1e-6, abs=1e-9), row
        assert row["loses"] == (want < -tolerance) and row["shown"] is False  # one model: nothing shown
        checked += 1
    assert checked == (len(preds) // len(labels) - 1) * len(classes)  # every block but the dense one
    md = (ws / "reports/synthetic/deployment.md").read_text()
    assert "not measured" in md and "![per-disease AP change by level](deployment.png)" in md
    assert (ws / "reports/synthetic/deployment.png").stat().st_size > 10_000

    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("cxrprune")
    runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.imported_from = 'audit/resnet18.pt'")
    assert len(runs) == 1
    assert runs.iloc[0]["tags.imported_md5"] == hashlib.md5((ws / "audit/resnet18.pt").read_bytes()).hexdigest()
