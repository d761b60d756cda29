"""Reader-study sampling: balance, blinding, seeding, reuse across forms, stratification, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrprune.core.classes import NIH_CXR_LT_CLASSES, NO_FINDING
from cxrprune.core.config import Params, ReaderConfig, from_dict, load_params
from cxrprune.core.errors import ConfigError, DataError
from cxrprune.reader.sample import (
    KEY_COLUMNS,
    MANIFEST_COLUMNS,
    draw_sample,
    load_key,
    load_manifest,
    load_pies,
    strata,
    study_id,
    write_sample,
)

CLASSES = list(NIH_CXR_LT_CLASSES)
ROOT = Path(__file__).resolve().parents[1]


def table(n: int, n_pies: int, seed: int = 0, findings: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels (one finding per image, cycling through ``findings``) and a pies table."""
    rng = np.random.default_rng(seed)
    findings = findings or ["Effusion", "Nodule", "Hernia", NO_FINDING]
    ids = [f"{i:08d}_000.png" for i in range(n)]
    labels = pd.DataFrame({"image_id": ids, "patient_id": [i[:8] for i in ids]})
    for c in CLASSES:
        labels[c] = 0
    for i in range(n):
        labels.loc[i, findings[i % len(findings)]] = 1
    pie = np.zeros(n, dtype=bool)
    pie[rng.choice(n, n_pies, replace=False)] = True
    pies = pd.DataFrame({"image_id": ids, "spearman": rng.random(n), "is_pie": pie})
    return labels, pies


def test_params_have_a_reader_section_with_the_papers_defaults():
    cfg = Params().reader
    assert (cfg.per_group, cfg.forms) == (20, 6)
    assert load_params(ROOT / "params.yaml").reader == ReaderConfig()


@pytest.mark.parametrize("key, value, expected", [
    ("per_group", 0, "reader.per_group"),
    ("forms", 0, "reader.forms"),
    ("seed", -1, "reader.seed"),
    ("image_size", 10, "reader.image_size"),
    ("simulated_readers", 0, "reader.simulated_readers"),
    ("answers_dir", " ", "reader.answers_dir"),
    ("duplicates", "first", "reader.duplicates"),
    ("stratify", "yes", "reader.stratify"),
    ("colour", 1, "reader.colour"),
])
def test_bad_reader_params_name_the_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict({"reader": {key: value}})


def test_simulation_off_allows_zero_simulated_readers():
    assert from_dict({"reader": {"simulate": False, "simulated_readers": 0}}).reader.simulated_readers == 0


def test_each_form_is_balanced_shuffled_and_blinded():
    labels, pies = table(200, 40)
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=10, forms=3, seed=4))
    assert list(s.manifest.columns) == MANIFEST_COLUMNS and list(s.key.columns) == KEY_COLUMNS
    assert "is_pie" not in s.manifest.columns and "stratum" not in s.manifest.columns
    assert s.manifest["case_id"].is_unique and s.key["case_id"].is_unique
    assert (s.manifest["case_id"] == s.key["case_id"]).all()
    pie_of = dict(zip(pies["image_id"], pies["is_pie"]))
    for form, rows in s.key.groupby("form"):
        assert list(rows["position"]) == list(range(1, 21))
        assert rows["is_pie"].sum() == 10 and (~rows["is_pie"]).sum() == 10
        assert rows["image_id"].is_unique
        assert all(pie_of[i] == p for i, p in zip(rows["image_id"], rows["is_pie"]))
        m = s.manifest[s.manifest["form"] == form]
        assert m["study"].nunique() == 1 and m["study"].iloc[0] == study_id(form, list(m["case_id"]))
    # shuffled: the PIEs are not simply the first half of every form
    first_half = s.key[s.key["position"] <= 10].groupby("form")["is_pie"].sum()
    assert not (first_half == 10).all()
    # case ids are neutral: same length and alphabet, nothing about the image or its group
    assert s.manifest["case_id"].str.fullmatch(r"[A-HJ-NP-Z2-9]{6}").all()
    assert s.info["distinct_pies"] == 30 and s.info["max_uses_per_image"] == 1


def test_the_sample_is_seeded():
    labels, pies = table(120, 30)
    a = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=8, forms=2, seed=3))
    b = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=8, forms=2, seed=3))
    c = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=8, forms=2, seed=5))
    pd.testing.assert_frame_equal(a.key, b.key)
    assert not a.key["image_id"].equals(c.key["image_id"])


def test_images_recur_across_forms_evenly_when_the_pies_run_short():
    labels, pies = table(300, 16)
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=8, forms=3, seed=0))
    uses = s.key[s.key["is_pie"]]["image_id"].value_counts()
    assert len(uses) == 16 and uses.max() - uses.min() <= 1  # 24 slots over 16 PIEs: each once or twice
    assert s.info["max_uses_per_image"] == 2
    for _, rows in s.key.groupby("form"):
        assert rows["image_id"].is_unique


def test_stratified_non_pies_match_the_pies_findings():
    labels, pies = table(400, 40)
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=12, forms=3, seed=2, stratify=True))
    assert s.info["unmatched"] == 0
    for _, rows in s.key.groupby("form"):
        a = rows[rows["is_pie"]]["stratum"].value_counts().sort_index()
        b = rows[~rows["is_pie"]]["stratum"].value_counts().sort_index()
        pd.testing.assert_series_equal(a, b, check_names=False)


def test_stratification_falls_back_when_a_stratum_has_no_non_pie():
    labels, pies = table(100, 10)
    # every Hernia image is a PIE: its slots must be filled from other strata, and counted
    hernia = labels["Hernia"] == 1
    pies.loc[hernia.to_numpy(), "is_pie"] = True
    pies.loc[~hernia.to_numpy(), "is_pie"] = False
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=10, forms=1, seed=0))
    assert s.info["unmatched"] == 10
    assert (s.key[~s.key["is_pie"]]["stratum"] != "Hernia").all()


def test_unstratified_sampling_also_balances():
    labels, pies = table(100, 20)
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=5, forms=2, stratify=False))
    assert s.key.groupby("form")["is_pie"].sum().tolist() == [5, 5]


def test_strata_are_the_rarest_positive_finding():
    labels, _ = table(10, 1, findings=["Effusion"])
    labels.loc[0, "Hernia"] = 1  # Effusion + Hernia: Hernia is rarer here
    labels.loc[1, "Effusion"] = 0  # nothing positive
    s = strata(labels, CLASSES)
    assert s[0] == "Hernia" and s[1] == NO_FINDING and s[2] == "Effusion"


def test_too_few_pies_for_one_form_is_a_clear_error():
    labels, pies = table(60, 4)
    with pytest.raises(DataError, match="reader.per_group"):
        draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=5, forms=1))


def test_pies_table_must_cover_the_test_set():
    labels, pies = table(60, 10)
    with pytest.raises(DataError, match="pies.csv lacks"):
        draw_sample(pies.iloc[1:], labels, CLASSES, ReaderConfig(per_group=5, forms=1))


def test_load_pies_checks_the_file(tmp_path):
    with pytest.raises(DataError, match="dvc repro analyze"):
        load_pies(tmp_path / "pies.csv")
    (tmp_path / "bad.csv").write_text("image_id,spearman\na,0.1\n")
    with pytest.raises(DataError, match="is_pie"):
        load_pies(tmp_path / "bad.csv")
    (tmp_path / "words.csv").write_text("image_id,spearman,is_pie\na,0.1,True\nb,0.2,False\n")
    assert load_pies(tmp_path / "words.csv")["is_pie"].tolist() == [True, False]
    (tmp_path / "odd.csv").write_text("image_id,spearman,is_pie\na,0.1,maybe\n")
    with pytest.raises(DataError, match="is_pie"):
        load_pies(tmp_path / "odd.csv")


def test_written_files_round_trip(tmp_path):
    labels, pies = table(80, 20)
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=5, forms=2))
    write_sample(s, tmp_path / "manifest.csv", tmp_path / "key.csv", tmp_path / "sample.json")
    key = load_key(tmp_path / "key.csv")
    manifest = load_manifest(tmp_path / "manifest.csv")
    assert key["is_pie"].dtype == bool and key["is_pie"].sum() == 10
    pd.testing.assert_frame_equal(manifest, s.manifest, check_dtype=False)
    assert "is_pie" not in (tmp_path / "manifest.csv").read_text().splitlines()[0]
    with pytest.raises(DataError, match="reader-sample"):
        load_key(tmp_path / "nothing.csv")


@settings(max_examples=25, deadline=None)
@given(n_pies=st.integers(3, 30), per_group=st.integers(1, 6), forms=st.integers(1, 5),
       seed=st.integers(0, 10_000), stratify=st.booleans())
def test_sampling_invariants(n_pies, per_group, forms, seed, stratify):
    labels, pies = table(n_pies + 40, n_pies, seed=seed)
    if n_pies < per_group:
        with pytest.raises(DataError):
            draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=per_group, forms=forms, seed=seed))
        return
    s = draw_sample(pies, labels, CLASSES, ReaderConfig(per_group=per_group, forms=forms, seed=seed,
                                                        stratify=stratify))
    assert len(s.key) == 2 * per_group * forms and s.key["case_id"].is_unique
    for _, rows in s.key.groupby("form"):
        assert rows["is_pie"].sum() == per_group and rows["image_id"].is_unique
    uses = s.key[s.key["is_pie"]]["image_id"].value_counts()
    assert uses.max() - (uses.min() if len(uses) == n_pies else 0) <= 1  # PIEs used evenly
