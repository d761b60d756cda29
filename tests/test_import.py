"""Import of the authors' published predictions.

The test writes pickles in the exact published format (the authors' ``evaluate_prune``
DataFrame: class probabilities + ``label``, file names as their ``prune.py`` writes them)
from prediction tables in this project's own prune-stage format, imports them, and checks
that the evaluate and analysis functions give the same results on the imported tables as
on the originals; then every validation error."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nih_layout import CLASSES, write_nih_dataset

from cxrprune import cli
from cxrprune.analysis import evaluate, fcd, forgetting, pies
from cxrprune.compression.predictions import LevelResult, predictions_table
from cxrprune.core.config import from_dict
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.datasets.importer import find_pickles, import_predictions, pickle_name
from cxrprune.datasets.prepare import load_meta, load_split, prepare_dataset
from cxrprune.stages import import_predictions as import_stage
from cxrprune.stats.metrics import average_precision

DATASET = "nih-cxr-lt"
SEEDS = [0, 1, 2]
LEVELS = [round(i * 0.05, 2) for i in range(20)]  # the paper's 20 levels
TEST_CSV = "miccai2023_nih-cxr-lt_labels_test.csv"


def _own_predictions(test_labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A prune-stage table: probabilities that follow the labels less as k grows."""
    rng = np.random.default_rng(seed)
    y = test_labels[CLASSES].to_numpy(dtype=np.float64)
    results = []
    for k in LEVELS:
        logits = 3.0 * (2 * y - 1) * (1 - k) + rng.normal(0, 1.0, y.shape)
        results.append(LevelResult("l1", k, k, (1 / (1 + np.exp(-logits))).astype(np.float32)))
    return predictions_table(results, test_labels["image_id"].tolist(), CLASSES)


def write_published(folder: Path, table: pd.DataFrame, test_csv: Path, seed: int, dataset: str = DATASET,
                    classes: list[str] = CLASSES) -> None:
    """The authors' files, built the way their code builds them (src/utils.py evaluate_prune
    and src/prune.py of VITA-Group/PruneCXR)."""
    folder.mkdir(parents=True, exist_ok=True)
    label_df = pd.read_csv(test_csv)
    y_true = pd.DataFrame(label_df[classes].to_numpy(dtype=np.float32), columns=classes)
    sparsity_ratios = np.array(range(0, 100, 5)) / 100
    for ratio in sparsity_ratios:
        block = table[(table["method"] == "l1") & np.isclose(table["sparsity"], ratio)]
        y_hat = pd.DataFrame(block[classes].to_numpy(dtype=np.float32), columns=classes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix, as in their code
            y_hat["label"] = y_true.apply(lambda x: np.where(x == 1)[0], axis=1)
            y_hat["label"] = y_hat["label"].apply(
                lambda x: "|".join(list(np.array(classes)[np.array(np.matrix(x)).squeeze(axis=0)])))
        name = f"{dataset}_resnet50_seed-{seed}_prune-0.pkl" if ratio == 0 else \
            f"{dataset}_resnet50_seed-{seed}_prune-{ratio}.pkl"
        y_hat.to_pickle(folder / name)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Raw NIH-layout labels, this project's prepared data and tables, and published pickles."""
    base = tmp_path_factory.mktemp("study")
    raw = base / "raw"
    write_nih_dataset(raw, per_split=24)
    prepared = base / "own" / "data" / "prepared" / "own"
    prepare_dataset(from_dict({"data": {"root": str(raw), "image_size": 32, "workers": 1}}).data, prepared)
    test_labels, _ = load_split(prepared, "test")
    tables = {}
    for seed in SEEDS:
        tables[seed] = _own_predictions(test_labels, seed)
        path = base / "own" / "data" / "predictions" / "own" / f"seed-{seed}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tables[seed].to_parquet(path, index=False)
        write_published(base / "published", tables[seed], raw / TEST_CSV, seed)
    return {"base": base, "raw": raw, "prepared": prepared, "tables": tables, "folder": base / "published"}


def _params(name="published", seeds=SEEDS, levels=LEVELS, methods=("l1",)):
    return from_dict({"seeds": list(seeds), "data": {"name": name},
                      "prune": {"methods": list(methods), "levels": list(levels)},
                      "evaluate": {"test": "ttest"}})


def _import(tmp_path, study, folder=None, labels=None, seeds=SEEDS, levels=LEVELS, **kw):
    return import_predictions(folder or study["folder"], labels or study["raw"] / TEST_CSV, DATASET,
                              seeds=seeds, levels=levels, prepared_dir=tmp_path / "prepared",
                              predictions_dir=tmp_path / "predictions", **kw)


def test_file_names_match_the_published_ones(study):
    names = sorted(p.name for p in study["folder"].iterdir() if "seed-0_" in p.name)
    assert sorted(pickle_name(DATASET, 0, k) for k in LEVELS) == names
    assert "nih-cxr-lt_resnet50_seed-0_prune-0.pkl" in names
    assert "nih-cxr-lt_resnet50_seed-0_prune-0.35.pkl" in names and "nih-cxr-lt_resnet50_seed-0_prune-0.1.pkl" in names
    assert len(find_pickles(study["folder"], DATASET)) == 60


def test_imported_tables_equal_the_originals(tmp_path, study):
    summary = _import(tmp_path, study)
    assert summary.files_read == 60 and summary.n_test == 24 and summary.ignored == []
    for seed in SEEDS:
        imported = pd.read_parquet(tmp_path / "predictions" / f"seed-{seed}.parquet")
        pd.testing.assert_frame_equal(imported, study["tables"][seed])
    own_labels, _ = load_split(study["prepared"], "test")
    imported_labels, placeholder = load_split(tmp_path / "prepared", "test")
    pd.testing.assert_frame_equal(imported_labels, own_labels)
    assert placeholder.shape == (24, 1, 1)
    pd.testing.assert_frame_equal(load_split(tmp_path / "prepared", "train")[0],
                                  load_split(study["prepared"], "train")[0])
    meta = load_meta(tmp_path / "prepared")
    assert meta["classes"] == CLASSES and meta["source"] == DATASET and meta["imported"]["seeds"] == SEEDS


def test_analyses_of_imported_predictions_reproduce_the_originals(tmp_path, study):
    _import(tmp_path, study)
    own_labels, classes = evaluate.load_test_labels(study["prepared"])
    imp_labels, imp_classes = evaluate.load_test_labels(tmp_path / "prepared")
    assert imp_classes == classes

    def analyses(labels, train_labels, tables):
        per_class = pd.concat([evaluate.per_class_metrics(t, labels, classes, s, workers=1)
                               for s, t in tables.items()], ignore_index=True)
        maps = evaluate.map_table(per_class)
        test = evaluate.paired_test(maps, "l1", "ttest", "holm", 0.05)
        curves = forgetting.forgettability_curves(forgetting.relative_change(per_class), classes)
        counts = forgetting.train_counts(train_labels, classes)
        pairs = fcd.fcd_pairs(curves, labels, classes)
        dense = [t[np.isclose(t["sparsity"], 0.0)].reset_index(drop=True) for t in tables.values()]
        sparse = [t[np.isclose(t["sparsity"], 0.9)].reset_index(drop=True) for t in tables.values()]
        ids, p0 = pies.ensemble(dense, classes)
        _, p9 = pies.ensemble(sparse, classes)
        corr = pies.rowwise_spearman(p0, p9)
        return {"per_class": per_class, "maps": maps, "paired": test.table, "safe": test.max_safe_sparsity,
                "curves": curves, "first_drop": forgetting.first_drop(curves), "dap95": forgetting.dap_at(curves),
                "r_dap": forgetting.correlate_with_frequency(forgetting.dap_at(curves), counts),
                "pairs": pairs, "ids": ids, "corr": corr, "pies": pies.select_pies(corr, 0.1)}

    own = analyses(own_labels, load_split(study["prepared"], "train")[0], study["tables"])
    imported_tables = {s: pd.read_parquet(tmp_path / "predictions" / f"seed-{s}.parquet") for s in SEEDS}
    imp = analyses(imp_labels, load_split(tmp_path / "prepared", "train")[0], imported_tables)
    for key, value in own.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(imp[key], value, check_exact=True)
        elif isinstance(value, pd.Series):
            pd.testing.assert_series_equal(imp[key], value, check_exact=True)
        elif isinstance(value, np.ndarray):
            assert np.array_equal(imp[key], value)
        else:
            assert imp[key] == value or (value != value and imp[key] != imp[key])
    # AP straight from the metric, per class, at every (seed, level).
    y = imp_labels[classes].to_numpy()
    for seed in SEEDS:
        for k in (0.0, 0.5, 0.95):
            rows = np.isclose(imported_tables[seed]["sparsity"], k)
            orig = np.isclose(study["tables"][seed]["sparsity"], k)
            assert np.array_equal(average_precision(y, imported_tables[seed].loc[rows, classes].to_numpy()),
                                  average_precision(y, study["tables"][seed].loc[orig, classes].to_numpy()))


def test_evaluate_stage_writes_identical_outputs_on_imported_predictions(tmp_path, study, monkeypatch):
    from cxrprune.stages import evaluate as evaluate_stage

    own_ws = tmp_path / "own"
    shutil.copytree(study["base"] / "own", own_ws)
    imp_ws = tmp_path / "imported"
    imp_ws.mkdir()
    monkeypatch.chdir(imp_ws)
    import_stage.run(_params(), str(study["folder"]), str(study["raw"] / TEST_CSV))
    evaluate_stage.run(_params())
    monkeypatch.chdir(own_ws)
    evaluate_stage.run(_params(name="own"))
    for rel in ("metrics/{}/per_class.csv", "metrics/{}/map_by_seed.csv", "metrics/{}/evaluate.json",
                "plots/{}/map_vs_sparsity.csv"):
        assert (imp_ws / rel.format("published")).read_bytes() == (own_ws / rel.format("own")).read_bytes()


def test_labels_folder_and_a_label_order_within_a_row_are_accepted(tmp_path, study):
    folder = tmp_path / "pkl"
    shutil.copytree(study["folder"], folder)
    path = folder / pickle_name(DATASET, 1, 0.3)
    df = pd.read_pickle(path)
    multi = next(i for i, v in enumerate(df["label"]) if "|" in v)
    df.loc[multi, "label"] = "|".join(reversed(df.loc[multi, "label"].split("|")))
    df.to_pickle(path)
    summary = _import(tmp_path, study, folder=folder, labels=study["raw"])  # the folder of the label CSVs
    assert summary.files_read == 60


def test_files_of_other_seeds_and_levels_are_ignored_with_a_note(tmp_path, study, capsys):
    from cxrprune.datasets.importer import report

    summary = _import(tmp_path, study, seeds=[0, 2], levels=[0.0, 0.5, 0.9])
    assert summary.files_read == 6 and len(summary.ignored) == 54
    assert pd.read_parquet(tmp_path / "predictions" / "seed-2.parquet")["sparsity"].unique().tolist() == [0.0, 0.5, 0.9]
    assert not (tmp_path / "predictions" / "seed-1.parquet").exists()
    report(summary)
    assert "54 file(s) for seeds or levels not in params.yaml were not imported" in capsys.readouterr().err


def _broken(tmp_path, study, seed, k, fn):
    folder = tmp_path / "pkl"
    shutil.copytree(study["folder"], folder)
    path = folder / pickle_name(DATASET, seed, k)
    obj = fn(pd.read_pickle(path))
    pd.to_pickle(obj, path)
    return folder, path


def _expect(tmp_path, study, folder, *parts):
    with pytest.raises(DataError) as err:
        _import(tmp_path, study, folder=folder)
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    assert not (tmp_path / "predictions").exists() and not (tmp_path / "prepared").exists()  # nothing written
    assert not list(tmp_path.glob(".predictions.import-*"))


def _set_labels(df, rows, values):
    for r, v in zip(rows, values):
        df.loc[r, "label"] = v
    return df


def test_label_mismatch_reports_the_first_rows(tmp_path, study):
    folder, path = _broken(tmp_path, study, 2, 0.65,
                           lambda df: _set_labels(df, [3, 7, 8, 20], ["Hernia", "", "No Finding|Mass", "Edema"]))
    ids = pd.read_csv(study["raw"] / TEST_CSV, dtype=str)["id"]
    _expect(tmp_path, study, folder, path.name, "column 'label' disagrees with", TEST_CSV, "in 4 row(s)",
            f"row 3 (image {ids[3]}: pickle 'Hernia'", f"row 7 (image {ids[7]}", "row 8")


def test_rows_in_another_order_are_refused(tmp_path, study):
    folder, path = _broken(tmp_path, study, 0, 0.0, lambda df: df.iloc[::-1].reset_index(drop=True))
    _expect(tmp_path, study, folder, path.name, "column 'label' disagrees")


def test_row_count_mismatch(tmp_path, study):
    folder, path = _broken(tmp_path, study, 1, 0.95, lambda df: df.iloc[:-2])
    _expect(tmp_path, study, folder, path.name, "22 rows but", TEST_CSV, "24 test images")


@pytest.mark.parametrize("change, parts", [
    (lambda df: df.drop(columns=["Hernia"]), ["missing ['Hernia']"]),
    (lambda df: df.rename(columns={"Effusion": "Pleural Effusion"}), ["missing ['Effusion']", "unexpected ['Pleural Effusion']"]),
    (lambda df: df.assign(extra=0.5), ["unexpected ['extra']"]),
    (lambda df: df.drop(columns=["label"]), ["missing ['label']"]),
])
def test_class_columns_must_match(tmp_path, study, change, parts):
    folder, path = _broken(tmp_path, study, 0, 0.4, change)
    _expect(tmp_path, study, folder, path.name, "columns do not match the 20 classes", *parts)


def test_bad_probabilities_and_non_frames(tmp_path, study):
    def nan(df):
        df.loc[5, "Mass"] = np.nan
        return df
    folder, path = _broken(tmp_path, study, 0, 0.2, nan)
    _expect(tmp_path, study, folder, path.name, "'Mass' in row 5", "not a number in [0, 1]")
    shutil.rmtree(folder)
    folder, path = _broken(tmp_path, study, 0, 0.2, lambda df: df.to_dict())
    _expect(tmp_path, study, folder, path.name, "holds a dict, not a pandas DataFrame")
    shutil.rmtree(folder)
    folder = tmp_path / "pkl"
    shutil.copytree(study["folder"], folder)
    (folder / pickle_name(DATASET, 2, 0.2)).write_bytes(b"not a pickle")
    _expect(tmp_path, study, folder, "prune-0.2.pkl: not a readable pickle")


def test_missing_seeds_and_levels_are_listed(tmp_path, study):
    folder = tmp_path / "pkl"
    shutil.copytree(study["folder"], folder)
    for k in (0.45, 0.5):
        (folder / pickle_name(DATASET, 1, k)).unlink()
    for p in folder.glob("*_seed-2_*.pkl"):
        p.unlink()
    _expect(tmp_path, study, folder, "22 of 60 (seed, sparsity) files missing", "seed 1 at 0.45, 0.5",
            "seed 2 at all 20 levels", "nih-cxr-lt_resnet50_seed-1_prune-0.45.pkl")


def test_wrong_folder_dataset_or_labels(tmp_path, study):
    with pytest.raises(DataError, match="no files named mimic-cxr-lt_resnet50_seed-0_prune-0.05.pkl"):
        import_predictions(study["folder"], study["raw"] / TEST_CSV, "mimic-cxr-lt", seeds=SEEDS, levels=LEVELS,
                           prepared_dir=tmp_path / "p", predictions_dir=tmp_path / "q")
    with pytest.raises(DataError, match="folder of published predictions not found"):
        _import(tmp_path, study, folder=tmp_path / "nowhere")
    with pytest.raises(DataError, match="train label file not found"):
        labels = tmp_path / "only_test"
        labels.mkdir()
        shutil.copy(study["raw"] / TEST_CSV, labels / TEST_CSV)
        _import(tmp_path, study, labels=labels / TEST_CSV)
    with pytest.raises(DataError, match="also appear in"):  # the test file given as the train file
        _import(tmp_path, study, train_labels=study["raw"] / TEST_CSV)


def test_a_real_prepared_dataset_is_not_overwritten(tmp_path, study):
    shutil.copytree(study["prepared"], tmp_path / "prepared")
    with pytest.raises(DataError, match="holds a prepared dataset.*choose another data.name"):
        _import(tmp_path, study)
    _import(tmp_path / "again", study)  # but an earlier import is replaced
    _import(tmp_path / "again", study)


def test_stage_requires_l1_only(study):
    with pytest.raises(ConfigError, match=r"set prune.methods: \[l1\]"):
        import_stage.run(_params(methods=("l1", "random")), str(study["folder"]), str(study["raw"] / TEST_CSV))


def test_cli_entry(tmp_path, study, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = {"seeds": SEEDS, "data": {"name": "pub"}, "prune": {"methods": ["l1"], "levels": LEVELS}}
    Path("params.yaml").write_text(json.dumps(params))
    argv = ["import-predictions", "--folder", str(study["folder"]), "--labels", str(study["raw"] / TEST_CSV)]
    assert cli.main(argv) == 0
    assert "imported 60 nih-cxr-lt prediction files" in capsys.readouterr().out
    assert Path("data/predictions/pub/seed-2.parquet").is_file() and Path("data/prepared/pub/meta.json").is_file()
    assert cli.main([*argv[:2], str(tmp_path / "nope"), *argv[3:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrprune: error: ") and err.count("\n") == 1
    assert os.path.isfile("data/prepared/pub/labels_train.parquet")
    assert os.path.isfile("data/models/pub/imported.json")  # the folder analyze depends on in dvc.yaml
