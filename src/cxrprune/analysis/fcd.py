"""Forgettability curve dissimilarity (FCD) of class pairs (Analysis 3).

FCD(A, B) is the Euclidean distance between the two forgettability curves (the reference
code; the poster says MSE, offered as ``mse``). It is related, over every unordered pair,
to the difference in log frequency and to the fourth root of the pair's IoU, both taken
from the TEST labels. The reference code weights by labels: with M = Y^T Y,

    f_A = sum_B M[B, A]                 (positives of A, each weighted by its label count)
    IoU(A, B) = M[A, B] / (f_A + f_B - M[A, B])

``plain`` uses the number of positives and the standard image-level IoU instead.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from cxrprune.analysis.forgetting import Correlation, correlate
from cxrprune.core.errors import DataError

Distance = Literal["euclidean", "mse"]
Weighting = Literal["label", "plain"]


def curve_distance(a: np.ndarray, b: np.ndarray, distance: Distance = "euclidean") -> float:
    """Distance between two curves sampled at the same sparsities."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if distance == "euclidean":
        return float(np.sqrt(np.sum(diff ** 2)))
    if distance == "mse":
        return float(np.mean(diff ** 2))
    raise ValueError(f"unknown FCD distance {distance!r}")


def label_statistics(y: np.ndarray, weighting: Weighting = "label") -> tuple[np.ndarray, np.ndarray]:
    """Per-class frequency ``f`` (C,) and pairwise IoU (C, C) of a 0/1 label matrix (N, C).

    ``label``: the reference code's label-weighted definitions from M = Y^T Y;
    ``plain``: f = positives per class, IoU = |A and B| / |A or B| over images.
    An IoU whose denominator is 0 (both classes absent) is NaN.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.ndim != 2:
        raise DataError(f"label matrix must be 2-D (images x classes), got shape {y.shape}")
    m = (y.T @ y).astype(np.float64)  # exact in int64, then float for the divisions
    if weighting == "label":
        f = m.sum(axis=0)
    elif weighting == "plain":
        f = np.diag(m).copy()
    else:
        raise ValueError(f"unknown FCD weighting {weighting!r}")
    denom = f[:, None] + f[None, :] - m
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(denom > 0, m / np.where(denom > 0, denom, 1.0), np.nan)
    return f, iou


def fcd_pairs(curves: pd.DataFrame, test_labels: pd.DataFrame | np.ndarray,
              classes: Sequence[str] | None = None, distance: Distance = "euclidean",
              weighting: Weighting = "label") -> pd.DataFrame:
    """One row per unordered class pair: ``class_a, class_b, fcd, abs_dlnf, iou, iou_quarter``.

    ``curves`` is the forgettability-curve table (sparsity x class); ``test_labels`` holds one
    0/1 column per class (a DataFrame with at least those columns, or an (N, C) array in the
    order of ``classes``). Pairs follow the class order (A before B). ``abs_dlnf`` is NaN
    when a class has frequency 0 (ln undefined).
    """
    classes = list(classes) if classes is not None else list(curves.columns)
    missing = [c for c in classes if c not in curves.columns]
    if missing:
        raise DataError(f"forgettability curves lack classes {missing[:3]}")
    if isinstance(test_labels, pd.DataFrame):
        absent = [c for c in classes if c not in test_labels.columns]
        if absent:
            raise DataError(f"test labels lack class columns {absent[:3]}; rerun the prepare stage")
        y = test_labels[classes].to_numpy()
    else:
        y = np.asarray(test_labels)
        if y.ndim != 2 or y.shape[1] != len(classes):
            raise DataError(f"test label matrix has shape {y.shape}, expected (N, {len(classes)})")
    f, iou = label_statistics(y, weighting)
    with np.errstate(divide="ignore"):
        ln_f = np.where(f > 0, np.log(np.where(f > 0, f, 1.0)), np.nan)
    values = curves[classes].to_numpy(dtype=np.float64)
    ia, ib = np.triu_indices(len(classes), k=1)
    rows = pd.DataFrame({
        "class_a": [classes[i] for i in ia],
        "class_b": [classes[j] for j in ib],
        "fcd": [curve_distance(values[:, i], values[:, j], distance) for i, j in zip(ia, ib)],
        "abs_dlnf": np.abs(ln_f[ia] - ln_f[ib]),
        "iou": iou[ia, ib],
    })
    rows["iou_quarter"] = rows["iou"] ** 0.25
    return rows


def fcd_correlations(pairs: pd.DataFrame) -> dict[str, Correlation]:
    """Correlation of FCD with |d ln f| (``freq``) and with IoU^(1/4) (``iou``) over defined pairs."""
    fcd = pairs["fcd"].to_numpy(dtype=np.float64)
    return {
        "freq": correlate(fcd, pairs["abs_dlnf"].to_numpy(dtype=np.float64)),
        "iou": correlate(fcd, pairs["iou_quarter"].to_numpy(dtype=np.float64)),
    }
