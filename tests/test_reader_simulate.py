"""Simulated readers follow the synthetic ground truth, and write the page's export format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrprune.core.errors import DataError
from cxrprune.reader.answers import ANSWER_COLUMNS, load_answers, read_answer_file
from cxrprune.reader.simulate import case_truth, reader_ids, simulate, simulate_reader
from cxrprune.reader.stats import compare


def cases(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "case_id": [f"C{i:05d}" for i in range(n)], "form": 1 + np.arange(n) % 3, "position": 1 + np.arange(n) // 3,
        "study": "s", "flipped": (rng.random(n) < 0.5).astype(float), "quality": rng.uniform(0, 1, n),
        "findings": rng.integers(0, 5, n), "is_pie": False, "image_id": [f"{i}.png" for i in range(n)],
    })


def test_answers_follow_the_ground_truth():
    c = cases()
    a = simulate_reader(c, "sim-1", np.random.default_rng(1))
    assert list(a.columns) == ANSWER_COLUMNS
    agree = (a["agree"] == "yes").to_numpy()
    flipped = c["flipped"].to_numpy() == 1
    assert agree[flipped].mean() < agree[~flipped].mean() - 0.3  # a wrong label is usually noticed
    good = c["quality"].to_numpy() > 0.7
    poor = c["quality"].to_numpy() < 0.3
    assert a["quality"][good].mean() > a["quality"][poor].mean() + 1.5
    assert a["difficulty"][poor].mean() > a["difficulty"][good].mean() + 0.8
    many = c["findings"].to_numpy() >= 3
    assert a["difficulty"][many].mean() > a["difficulty"][c["findings"].to_numpy() == 0].mean()
    assert a["quality"].between(1, 5).all() and a["difficulty"].between(1, 5).all()
    assert (a["seconds"] > 0).all()


def test_simulation_is_seeded_and_each_reader_differs():
    c = cases(300)
    first, again = simulate(c, 2, seed=4), simulate(c, 2, seed=4)
    assert sorted(first) == [f"{r}-form-{f}.csv" for r in ("sim-1", "sim-2") for f in (1, 2, 3)]
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    assert not first["sim-1-form-1.csv"]["quality"].equals(first["sim-2-form-1.csv"]["quality"])
    assert reader_ids(3) == ["sim-1", "sim-2", "sim-3"]


def test_simulated_files_read_back_through_the_answer_loader(tmp_path):
    c = cases(60)
    for name, df in simulate(c, 1, seed=0).items():
        df.to_csv(tmp_path / name, index=False)
    key = c[["case_id", "form", "position", "image_id", "is_pie"]].assign(stratum="x")
    manifest = c[["form", "position", "case_id", "image_id"]].assign(labels="Mass", study="s")
    files = [(p, "simulated") for p in sorted(tmp_path.glob("*.csv"))]
    ratings, report = load_answers(files, key, manifest)
    assert len(ratings) == 60 and report["decisions"] == []
    assert read_answer_file(files[0][0])["reader_id"].unique().tolist() == ["sim-1"]


def test_case_truth_joins_key_manifest_and_truth():
    key = pd.DataFrame({"case_id": ["A", "B"], "form": [1, 1], "position": [2, 1], "image_id": ["a", "b"],
                        "is_pie": [True, False], "stratum": ["Mass", "No Finding"]})
    manifest = pd.DataFrame({"form": [1, 1], "position": [2, 1], "case_id": ["A", "B"], "image_id": ["a", "b"],
                             "labels": ["Mass|Nodule|Hernia", "No Finding"], "study": ["s", "s"]})
    truth = pd.DataFrame({"image_id": ["a", "b", "z"], "flipped": [1, 0, 0], "quality": [0.4, 1.0, 1.0]})
    c = case_truth(key, manifest, truth)
    assert c["case_id"].tolist() == ["B", "A"]  # reading order
    assert c["findings"].tolist() == [0, 3] and c["flipped"].tolist() == [0.0, 1.0]
    with pytest.raises(DataError, match="lacks 1 sampled image"):
        case_truth(key, manifest, truth[truth["image_id"] != "a"])
    with pytest.raises(DataError, match="ground truth"):
        case_truth(key, manifest, truth.drop(columns=["quality"]))


def test_on_pies_made_of_flipped_and_degraded_images_the_difference_shows():
    c = cases(400, seed=3)
    bad = (c["flipped"] == 1) & (c["quality"] < 0.5)
    c["is_pie"] = bad
    a = simulate_reader(c, "sim-1", np.random.default_rng(0))
    agree = (a["agree"] == "yes").astype(float).to_numpy()
    s = compare(agree, bad.to_numpy(), np.arange(len(agree)))  # one reader: each case once
    assert s["pie_mean"] < s["non_pie_mean"] and s["p"] < 0.01 and s["rank_biserial"] < 0
