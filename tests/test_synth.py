"""Tests of the synthetic CXR-LT generator: label statistics, rendering, layout, determinism.

The label checks use a large sample because the claims are statistical (prevalence and
co-occurrence of the real NIH-CXR-LT labels); the layout checks use a tiny config so the
whole file stays fast.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import multivariate_normal, spearmanr

from cxrprune.core.classes import NIH_CXR_LT_CLASSES, nih_train_prevalence
from cxrprune.core.config import SyntheticConfig, load_params
from cxrprune.datasets.synth import generate as gen
from cxrprune.datasets.synth import labels as lab
from cxrprune.datasets.synth import render

REPO = Path(__file__).resolve().parents[1]

CLASSES = list(NIH_CXR_LT_CLASSES)
EMPHYSEMA = CLASSES.index("Emphysema")
SUBCUTANEOUS = CLASSES.index("Subcutaneous Emphysema")
TINY = SyntheticConfig(seed=3, n_patients=24, images_per_patient=2.0, image_size=32, min_positives=2,
                       label_noise=0.1, degrade_rate=0.3)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return lab.sample_labels(200_000, np.random.default_rng(0))


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "raw"
    return out, gen.generate_dataset(TINY, out)


def read_split(root: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(root / gen.label_file(split), dtype={"subj_id": str})


# --------------------------------------------------------------------------- labels


def test_sample_shape_and_exclusive_no_finding(sample: np.ndarray) -> None:
    assert sample.shape == (200_000, 20) and sample.dtype == np.int8
    findings = sample[:, 1:].sum(axis=1)
    assert (sample.sum(axis=1) >= 1).all()
    assert ((sample[:, 0] == 1) == (findings == 0)).all()


def test_prevalence_follows_real_long_tail(sample: np.ndarray) -> None:
    real = nih_train_prevalence()
    measured = sample.mean(axis=0)
    common = real > 0.01
    np.testing.assert_allclose(measured[common], real[common], rtol=0.08)
    np.testing.assert_allclose(measured[~common], real[~common], rtol=0.3)
    assert spearmanr(measured, real).statistic > 0.95


def test_cooccurrence_structure(sample: np.ndarray) -> None:
    emph, subq = sample[:, EMPHYSEMA] == 1, sample[:, SUBCUTANEOUS] == 1
    iou = (emph & subq).sum() / (emph | subq).sum()
    assert iou > 0.4  # real val+test: 0.70, the largest overlap of any pair
    assert (emph & subq).mean() > 5 * emph.mean() * subq.mean()
    findings = sample[:, 1:].sum(axis=1)
    assert 0.02 < (findings >= 3).mean() < 0.15  # real test split: 12.1% (with fewer normals)


def test_conditional_draw_always_has_the_class() -> None:
    rng = np.random.default_rng(1)
    hernia = CLASSES.index("Hernia")
    draws = lab.sample_labels_given(2000, rng, hernia)
    assert (draws[:, hernia] == 1).all() and (draws[:, 0] == 0).all()
    normal = lab.sample_labels_given(3, rng, 0)
    assert (normal[:, 0] == 1).all() and normal[:, 1:].sum() == 0


def test_upper_orthant_matches_scipy() -> None:
    for h, k, rho in [(0.5, 1.2, 0.3), (2.0, 1.5, 0.9), (1.0, -0.3, -0.5)]:
        cdf = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([-h, -k])
        assert lab.upper_orthant(np.array(h), np.array(k), np.array(rho)) == pytest.approx(cdf, abs=1e-6)


def test_label_model_is_a_valid_copula() -> None:
    model = lab.label_model()
    r = model.correlation
    np.testing.assert_allclose(np.diag(r), 1.0)
    np.testing.assert_allclose(r, r.T)
    assert np.linalg.eigvalsh(r).min() > 0
    assert lab.label_model() is model  # fitted once per process


# --------------------------------------------------------------------------- rendering


def _downsampled(labels: np.ndarray, seed: int = 7) -> np.ndarray:
    body = np.random.default_rng(seed)
    anatomy, geometry = render.draw_anatomy(body), render.draw_geometry(body)
    image = render.render(labels, anatomy, geometry, np.random.default_rng(seed), 128, 1.0)
    return np.asarray(Image.fromarray(render.to_uint8(image)).resize((48, 48), Image.BILINEAR), dtype=float) / 255


@pytest.mark.parametrize("name", CLASSES[1:])
def test_every_finding_is_visible_at_48_px(name: str) -> None:
    normal = np.zeros(20, np.int8)
    normal[0] = 1
    finding = np.zeros(20, np.int8)
    finding[CLASSES.index(name)] = 1
    diffs = [np.abs(_downsampled(finding, s) - _downsampled(normal, s)) for s in range(3)]
    assert max(d.max() for d in diffs) > 0.08, name  # same seed: the difference is the finding


@pytest.mark.parametrize("size", [32, 48, 1024])
def test_render_sizes(size: int) -> None:
    rng = np.random.default_rng(0)
    labels = lab.sample_labels(1, rng)[0]
    image = render.render(labels, render.draw_anatomy(rng), render.draw_geometry(rng), rng, size)
    assert image.shape == (size, size) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05


def test_degradation_rates_and_quality() -> None:
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 0.5, np.float32)
    assert render.degrade(image, rng, 0.0)[1:] == (1.0, "none")
    results = [render.degrade(image, rng, 0.999)[1:] for _ in range(60)]
    assert {kind for _, kind in results} == set(render.DEGRADATIONS)
    assert all(0.0 < q < 1.0 for q, _ in results)


@pytest.mark.parametrize("name", ["Effusion", "Nodule", "Hernia"])
def test_a_flipped_class_is_drawn_faintly(name: str) -> None:
    """Label noise sits on ambiguous images: the flipped class leaves a trace, weaker than the
    finding at its lowest severity, whether the label adds it or drops it."""
    c = CLASSES.index(name)
    normal = np.zeros(20, np.int8)
    normal[0] = 1
    finding = np.zeros(20, np.int8)
    finding[c] = 1
    body = np.random.default_rng(5)
    anatomy, geometry = render.draw_anatomy(body), render.draw_geometry(body)

    def draw(labels, faint=-1, signal=1.0):
        return render.render(labels, anatomy, geometry, np.random.default_rng(11), 128, signal, faint=faint)

    base = draw(normal)
    trace = np.abs(draw(normal, faint=c) - base).sum()
    assert trace > 0
    np.testing.assert_array_equal(draw(finding, faint=c), draw(normal, faint=c))  # present or not: the same trace
    full = np.abs(draw(finding) - base).sum()
    assert trace < 0.8 * full


# --------------------------------------------------------------------------- planning


def test_label_noise_flips_exactly_one_label() -> None:
    cfg = dataclasses.replace(TINY, n_patients=800, label_noise=0.1)
    plans = gen.plan_dataset(cfg)
    rows = [(t, n, f) for p in plans for t, n, f in zip(p.true, p.noisy, p.flipped)]
    flipped = np.array([f for _, _, f in rows])
    assert abs((flipped >= 0).mean() - 0.1) < 0.02
    for true, noisy, c in rows:
        for labels in (true, noisy):
            assert labels[0] == int(labels[1:].sum() == 0)  # No Finding stays exclusive
        changed = set(np.flatnonzero(true != noisy)) - {0}
        assert changed == ({c} if c >= 0 else set())


def test_top_up_reaches_min_positives() -> None:
    plans = gen.plan_dataset(dataclasses.replace(TINY, min_positives=5))
    for split in gen.SPLITS:
        noisy = np.array([row for p in plans if p.split == split for row in p.noisy])
        assert (noisy.sum(axis=0) >= 5).all(), split


def test_train_floor_applies_to_train_only() -> None:
    base = gen.plan_dataset(dataclasses.replace(TINY, min_positives=3))
    floored = gen.plan_dataset(dataclasses.replace(TINY, min_positives=3, min_train_positives=9))

    def counts(plans, split):
        return np.array([row for p in plans if p.split == split for row in p.noisy]).sum(axis=0)

    assert (counts(floored, "train") >= 9).all()
    assert (counts(base, "train") < 9).any()  # the floor did something
    for split in ("val", "test"):  # untouched: same images, same labels
        np.testing.assert_array_equal(counts(floored, split), counts(base, split))
    # the added train images carry the class they were added for, with realistic company
    added = [p.true[k] for p in floored if p.split == "train" for k in range(len(p.true))]
    assert len(added) > sum(len(p.true) for p in base if p.split == "train")


# --------------------------------------------------------------------------- layout


def test_layout_matches_the_contract(tiny_dataset: tuple[Path, dict]) -> None:
    root, summary = tiny_dataset
    patients, ids = {}, set()
    for split in gen.SPLITS:
        table = read_split(root, split)
        assert list(table.columns) == ["id", *CLASSES, "subj_id"]
        assert summary["counts"][split] == len(table)
        assert table["subj_id"].str.fullmatch(r"\d{8}").all()
        assert (table["id"].str[:8] == table["subj_id"]).all()
        assert (table[CLASSES].sum() >= TINY.min_positives).all()
        assert set(table[CLASSES].to_numpy().ravel()) <= {0, 1}
        patients[split] = set(table["subj_id"])
        ids |= set(table["id"])
        for image_id in table["id"]:
            with Image.open(root / gen.IMAGE_DIR / image_id) as im:
                assert im.mode == "L" and im.size == (TINY.image_size, TINY.image_size)
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"]
                or patients["val"] & patients["test"])
    assert {p.name for p in (root / gen.IMAGE_DIR).iterdir()} == ids
    assert all(re.fullmatch(r"\d{8}_\d{3}\.png", i) for i in ids)


def test_truth_file_is_consistent(tiny_dataset: tuple[Path, dict]) -> None:
    root, summary = tiny_dataset
    truth = pd.read_csv(root / gen.TRUTH_FILE, keep_default_na=False)
    assert list(truth.columns) == ["id", "split", "flipped", "flipped_class", "quality", "degradation"]
    labels = pd.concat([read_split(root, s).assign(split=s) for s in gen.SPLITS])
    merged = truth.merge(labels[["id", "split"]], on="id", suffixes=("", "_csv"))
    assert len(merged) == len(truth) == len(labels) == summary["images"]
    assert (merged["split"] == merged["split_csv"]).all()
    assert ((truth["flipped"] == 1) == (truth["flipped_class"] != "")).all()
    assert set(truth.loc[truth["flipped"] == 1, "flipped_class"]) <= set(CLASSES[1:])
    assert ((truth["quality"] == 1.0) == (truth["degradation"] == "none")).all()
    assert truth["quality"].between(0, 1).all()


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tiny_dataset: tuple[Path, dict], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tiny_dataset
    monkeypatch.setattr(gen, "_PARALLEL_MIN_IMAGES", 0)  # the rerun uses a process pool
    gen.generate_dataset(TINY, tmp_path / "again")
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(root)
    other = dataclasses.replace(TINY, seed=4, n_patients=20)
    monkeypatch.setattr(gen, "_PARALLEL_MIN_IMAGES", 10**9)
    gen.generate_dataset(other, tmp_path / "other")
    a = read_split(root, "train")
    b = read_split(tmp_path / "other", "train")
    assert not a.equals(b)
    first = sorted((tmp_path / "other" / gen.IMAGE_DIR).iterdir())[0]
    assert first.read_bytes() != (root / gen.IMAGE_DIR / first.name).read_bytes()


def test_generate_replaces_the_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    (out / "images").mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    gen.generate_dataset(dataclasses.replace(TINY, n_patients=20), out)
    assert not (out / "stale.txt").exists()
    assert not list(tmp_path.glob(".raw*"))  # no temporary folder left behind


def test_test_split_can_grow_without_touching_train_or_val() -> None:
    """synthetic.min_test_positives and extra_test_patients (issue 20: power where it matters):
    the training and validation images, labels and flips stay exactly those of the base draw."""
    base = gen.plan_dataset(TINY)
    grown = gen.plan_dataset(dataclasses.replace(TINY, min_test_positives=6, extra_test_patients=15))
    for split in ("train", "val"):
        a, b = [p for p in base if p.split == split], [p for p in grown if p.split == split]
        assert [p.patient for p in a] == [p.patient for p in b]
        for p, q in zip(a, b):
            assert [r.tolist() for r in p.noisy] == [r.tolist() for r in q.noisy] and p.flipped == q.flipped
    test = [p for p in grown if p.split == "test"]
    assert {p.patient for p in test} >= set(range(TINY.n_patients + 1, TINY.n_patients + 16))
    counts = np.array([r for p in test for r in p.noisy]).sum(axis=0)
    assert (counts >= 6).all()
    assert sum(f >= 0 for p in test if p.patient > TINY.n_patients for f in p.flipped) > 0  # extras get noise too


def test_the_powered_test_split_of_the_readme_meets_its_targets() -> None:
    """README (Calibration, power): with the default's generator, min_test_positives 30 and 400
    test-only patients give every class >= 30 test positives and >= 100 PIEs at analyze.pie_fraction."""
    params = load_params(REPO / "params.yaml")
    plans = gen.plan_dataset(dataclasses.replace(params.synthetic, min_test_positives=30, extra_test_patients=400))
    test = np.array([r for p in plans if p.split == "test" for r in p.noisy])
    assert (test.sum(axis=0) >= 30).all()
    assert len(test) * params.analyze.pie_fraction >= 100
