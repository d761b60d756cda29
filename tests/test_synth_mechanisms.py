"""The generator's planted routes (`synthetic.mechanisms`, `synthetic.effect`) and its negative
control (`mechanisms: []`), on the images themselves.

Two kinds of oracle:
- exact: with one route alone, every image outside that route's reach is byte-identical to the
  negative control's (ambiguity: flipped test images; mottle: degraded test images; quality:
  degraded images), and labels, splits and the truth table never change, so a route can move
  only its own statistic;
- signal-to-noise at the default training size (32 px, resized as `prepare` does): each finding's
  rendered difference image (same patient and noise, with and without it) against the image's
  pixel noise. Every finding must be visible (twice the Rose criterion) under every setting; the
  frequency route must make extent and polarity follow frequency; the label-noise route must leave a
  flipped class's trace between absent and present.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.signal import convolve2d
from scipy.stats import spearmanr

from cxrprune.core.classes import NIH_CXR_LT_CLASSES, nih_train_prevalence
from cxrprune.core.config import SyntheticConfig, from_dict
from cxrprune.core.errors import ConfigError
from cxrprune.datasets.synth import generate as gen
from cxrprune.datasets.synth import mechanisms, render
from cxrprune.datasets.synth.labels import FINDING_INDICES

DEFAULT_SIZE = 32  # params.yaml data.image_size
TINY = SyntheticConfig(seed=5, n_patients=60, images_per_patient=2.0, image_size=64, min_positives=2,
                       min_train_positives=2, label_noise=0.15, degrade_rate=0.3)
SETTINGS = {"none": [], "frequency": ["frequency"], "label_noise": ["label_noise"], "quality": ["quality"],
            "ambiguity": ["ambiguity"], "mottle": ["mottle"], "quality+mottle": ["quality", "mottle"]}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[dict[str, np.ndarray], pd.DataFrame, dict[str, str]]]:
    """Each setting's images (by id), truth table and label CSVs, from one tiny config."""
    out = {}
    for name, routes in SETTINGS.items():
        root = tmp_path_factory.mktemp(name) / "raw"
        gen.generate_dataset(dataclasses.replace(TINY, mechanisms=routes), root)
        images = {p.name: np.asarray(Image.open(p)) for p in sorted((root / gen.IMAGE_DIR).iterdir())}
        csvs = {s: (root / gen.label_file(s)).read_text() for s in gen.SPLITS}
        out[name] = images, pd.read_csv(root / gen.TRUTH_FILE, keep_default_na=False), csvs
    return out


def _changed(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> set[str]:
    assert a.keys() == b.keys()
    return {k for k in a if not np.array_equal(a[k], b[k])}


def test_labels_splits_and_truth_are_the_same_under_every_setting(generated):
    _, truth0, csv0 = generated["none"]
    for name in SETTINGS:
        _, truth, csvs = generated[name]
        assert csvs == csv0, name
        pd.testing.assert_frame_equal(truth, truth0, obj=name)
    assert truth0["flipped"].sum() > 5 and (truth0["degradation"] != "none").sum() > 5  # the routes have images


def test_label_noise_route_changes_only_flipped_images(generated):
    truth = generated["none"][1]
    flipped = set(truth.loc[truth["flipped"] == 1, "id"])
    changed = _changed(generated["none"][0], generated["label_noise"][0])
    assert changed <= flipped and len(changed) >= 0.8 * len(flipped), (len(changed), len(flipped))


def test_quality_route_changes_only_degraded_images(generated):
    truth = generated["none"][1]
    degraded = set(truth.loc[truth["degradation"] != "none", "id"])
    changed = _changed(generated["none"][0], generated["quality"][0])
    assert changed <= degraded and len(changed) >= 0.8 * len(degraded), (len(changed), len(degraded))


def test_ambiguity_route_changes_only_flipped_test_images(generated):
    truth = generated["none"][1]
    test = truth["split"] == "test"
    flipped = set(truth.loc[(truth["flipped"] == 1) & test, "id"])
    changed = _changed(generated["none"][0], generated["ambiguity"][0])
    # Every flipped test image gains findings; training and validation images are untouched, so
    # the route cannot change what the networks learn.
    assert changed == flipped and len(flipped) >= 2, (len(changed), len(flipped))


@pytest.mark.parametrize("routes", ["mottle", "quality+mottle"])
def test_mottle_route_changes_only_degraded_test_images_and_adds_to_the_quality_route(generated, routes):
    truth = generated["none"][1]
    degraded = set(truth.loc[(truth["degradation"] != "none") & (truth["split"] == "test"), "id"])
    base = generated["none" if routes == "mottle" else "quality"][0]
    changed = _changed(base, generated[routes][0])
    assert changed <= degraded and len(changed) >= 0.8 * len(degraded) and degraded, (len(changed), len(degraded))


def test_ambiguous_findings_are_unlabelled_and_spare_the_flipped_class():
    rng = np.random.default_rng(0)
    for _ in range(200):
        true = (rng.random(len(NIH_CXR_LT_CLASSES)) < 0.2).astype(np.int8)
        flipped = int(rng.choice(FINDING_INDICES))
        picks = mechanisms.ambiguous_findings(true, flipped, rng)
        classes = [FINDING_INDICES[j] for j in picks]
        absent = [c for c in FINDING_INDICES if not true[c] and c != flipped]
        assert len(picks) == min(mechanisms.AMBIGUOUS_FINDINGS, len(absent)) == len(set(picks))
        assert set(classes) <= set(absent)


def test_frequency_route_changes_only_images_with_a_finding(generated):
    truth = generated["none"][1]
    changed = _changed(generated["none"][0], generated["frequency"][0])
    # An image without any true finding has nothing to weaken: identical. (True findings: the
    # CSV's, corrected for the flip, since the image is rendered from the truth.)
    labels = pd.concat([pd.read_csv(io.StringIO(generated["none"][2][s])) for s in gen.SPLITS])
    labels = labels.set_index("id")[list(NIH_CXR_LT_CLASSES)]
    true = labels.copy()
    for row in truth[truth["flipped"] == 1].itertuples():
        true.loc[row.id, row.flipped_class] = 1 - true.loc[row.id, row.flipped_class]
    findings = set(true.index[true.iloc[:, list(FINDING_INDICES)].sum(axis=1) > 0])
    assert changed <= findings and len(changed) >= 0.8 * len(findings), (len(changed), len(findings))


# --------------------------------------------------------------------------- visibility


def _image(labels: np.ndarray, patient: int, cfg_routes: list[str], faint: int = -1) -> np.ndarray:
    """One patient's image at 128 px, resized to the training size the way prepare does."""
    body = np.random.default_rng([11, patient])
    anatomy, geometry = render.draw_anatomy(body), render.draw_geometry(body)
    frequency = mechanisms.strength(cfg_routes, 1.0, "frequency")
    extent = mechanisms.class_extent(frequency)
    faint_effect = mechanisms.strength(cfg_routes, 1.0, "label_noise")
    image = render.render(labels, anatomy, geometry, np.random.default_rng([12, patient]), 128, 1.0, faint=faint,
                          faint_effect=faint_effect, extent=extent, polarity=frequency)
    small = Image.fromarray(render.to_uint8(image)).resize((DEFAULT_SIZE, DEFAULT_SIZE), Image.Resampling.BILINEAR,
                                                           reducing_gap=2.0)
    return np.asarray(small, dtype=np.float64).ravel() / 255.0


def _labels(c: int | None) -> np.ndarray:
    labels = np.zeros(len(NIH_CXR_LT_CLASSES), np.int8)
    labels[0 if c is None else c] = 1
    return labels


def _noise_sigma(image: np.ndarray) -> float:
    """Immerkaer's (1996) estimate of an image's pixel-noise standard deviation (a Laplacian-difference
    filter that cancels smooth structure); anatomy edges only raise it, so SNRs are conservative."""
    x = image.reshape(DEFAULT_SIZE, DEFAULT_SIZE)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    return float(np.sqrt(np.pi / 2) / (6 * (x.shape[0] - 2) * (x.shape[1] - 2))
                 * np.abs(convolve2d(x, kernel, mode="valid")).sum())


def _snr(routes: list[str], c: int, patients: int = 30) -> tuple[float, float, float, float]:
    """Medians over patients, in units of the image's pixel noise at the training size: the
    signature's peak contrast for finding ``c`` present and for its faint (flipped-label) trace;
    the present signature's summed absolute contrast (extent times contrast) and its summed
    signed contrast (> 0: brighter, opacity-like; < 0: darker, gas-like). One seed renders the
    patient with and without it (render's contract), so the difference is the signature alone."""
    present, trace, summed, signed = [], [], [], []
    for p in range(patients):
        neg = _image(_labels(None), p, routes)
        sigma = _noise_sigma(neg)
        diff = _image(_labels(c), p, routes) - neg
        present.append(np.abs(diff).max() / sigma)
        summed.append(np.abs(diff).sum() / sigma)
        signed.append(diff.sum() / sigma)
        trace.append(np.abs(_image(_labels(None), p, routes, faint=c) - neg).max() / sigma)
    return (float(np.median(present)), float(np.median(trace)), float(np.median(summed)),
            float(np.median(signed)))


ROSE = 5.0  # the Rose criterion: a signal needs an SNR of about 5 to be seen reliably


@pytest.fixture(scope="module")
def visibility() -> dict[str, np.ndarray]:
    return {name: np.array([_snr(routes, c) for c in FINDING_INDICES])
            for name, routes in (("none", []), ("frequency", ["frequency"]), ("label_noise", ["label_noise"]))}


def test_every_finding_is_visible_at_the_default_size_under_every_setting(visibility):
    for name, snr in visibility.items():
        weak = {NIH_CXR_LT_CLASSES[c]: round(v, 1) for c, v in zip(FINDING_INDICES, snr[:, 0]) if v < 2 * ROSE}
        assert not weak, f"{name}: findings with SNR < {2 * ROSE} at {DEFAULT_SIZE} px: {weak}"


def test_frequency_route_makes_extent_and_polarity_follow_frequency(visibility):
    prevalence = nih_train_prevalence()[list(FINDING_INDICES)]
    none, planted = visibility["none"], visibility["frequency"]
    extent = planted[:, 2] / none[:, 2]
    assert spearmanr(extent, prevalence).statistic > 0.8
    # Rarer classes focal (less summed contrast), commoner ones diffuse (more) and bright, rarer ones
    # dark; the findings drawn only as an anatomy change keep theirs (render.FINDINGS: no drawing).
    rarity = mechanisms.rarity()
    drawn = np.array([f.draw is not None for f in render.FINDINGS.values()])
    rare, common = drawn & (rarity > 0.5), drawn & (rarity < 0.5)
    # (A reversed drawing can gain summed contrast through the image's nonlinear composition:
    # Calcification of the Aorta does, so the rare side is checked by its median.)
    assert np.median(extent[rare]) < 1.0 and extent[common].min() > 1.0
    assert extent[rare].min() < 0.5 and extent[common].max() > 2.0
    assert (planted[rare, 3] < 0).all() and (planted[common, 3] > 0).all()
    assert (planted[~drawn] == none[~drawn]).all()
    # Without the route neither follows frequency: polarity is mixed on both sides, and extent does not
    # rise with frequency, so the route is the only cause the generator gives.
    assert (none[rare, 3] > 0).any() and (none[common, 3] < 0).any()
    assert spearmanr(none[:, 2], prevalence).statistic < 0.3
    # A rarer finding's peak contrast stays of the same order (a reversed drawing's peak differs
    # through the image's nonlinear composition); a commoner one's rises with its halo, to at most
    # 1 + HALO times its own (with the same slack); every finding stays visible (the test above).
    np.testing.assert_allclose(planted[rare, 0], none[rare, 0], rtol=0.5)
    gain = planted[common, 0] / none[common, 0]
    assert np.median(gain) > 1.5 and gain.min() > 0.5 and gain.max() < 1.5 * (1.0 + render.HALO), gain


def test_label_noise_route_leaves_a_borderline_trace(visibility):
    none, planted = visibility["none"], visibility["label_noise"]
    np.testing.assert_array_equal(none[:, 1], 0.0)  # negative control: the trace is not drawn at all
    assert (planted[:, 1] > 1.0).all() and (planted[:, 1] < planted[:, 0]).all()
    np.testing.assert_array_equal(planted[:, 0], none[:, 0])  # present findings untouched


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("override, key", [({"mechanisms": ["frequency", "magic"]}, "synthetic.mechanisms"),
                                           ({"mechanisms": ["quality", "quality"]}, "synthetic.mechanisms"),
                                           ({"effect": 1.5}, "synthetic.effect"),
                                           ({"effect": -0.1}, "synthetic.effect")])
def test_bad_mechanism_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({"synthetic": override})
