"""Class lists of the two CXR-LT datasets and the real NIH-CXR-LT label statistics.

The statistics drive the synthetic default so that its long tail and co-occurrence
structure follow the real dataset (Holste et al., MICCAI 2023; NIH-CXR-LT label files).
"""

from __future__ import annotations

import numpy as np

# Canonical order: descending train frequency (NIH-CXR-LT).
NIH_CXR_LT_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Infiltration",
    "Effusion",
    "Atelectasis",
    "Nodule",
    "Mass",
    "Consolidation",
    "Pneumothorax",
    "Pleural Thickening",
    "Cardiomegaly",
    "Emphysema",
    "Edema",
    "Fibrosis",
    "Subcutaneous Emphysema",
    "Pneumonia",
    "Tortuous Aorta",
    "Calcification of the Aorta",
    "Pneumoperitoneum",
    "Hernia",
    "Pneumomediastinum",
)

# Order of the authors' code.
MIMIC_CXR_LT_CLASSES: tuple[str, ...] = (
    "Support Devices",
    "Lung Opacity",
    "Cardiomegaly",
    "Pleural Effusion",
    "Atelectasis",
    "Pneumonia",
    "Edema",
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Consolidation",
    "Pneumothorax",
    "Fracture",
    "Calcification of the Aorta",
    "Tortuous Aorta",
    "Subcutaneous Emphysema",
    "Lung Lesion",
    "Pneumomediastinum",
    "Pneumoperitoneum",
    "Pleural Other",
)

NO_FINDING = "No Finding"

# NIH-CXR-LT train counts per class, in canonical order (Subcutaneous Emphysema, Tortuous
# Aorta, Calcification of the Aorta, Pneumoperitoneum and Pneumomediastinum are approximate).
NIH_TRAIN_COUNTS: tuple[int, ...] = (44625, 12739, 7919, 7587, 4359, 3689, 2626, 2432, 1998, 1590, 1327, 1283, 1138, 970, 806, 600, 370, 210, 130, 90)
NIH_TRAIN_IMAGES = 78_506

# 20x20 co-occurrence counts over the real val+test label files (33,614 images), canonical
# order; the diagonal holds the class counts.
NIH_VALTEST_IMAGES = 33_614
_NIH_VALTEST_COOCCURRENCE = (
    (14781, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    (0, 7155, 1791, 1305, 584, 483, 553, 580, 355, 320, 234, 425, 105, 208, 290, 11, 10, 12, 16, 50),
    (0, 1791, 5398, 1363, 385, 513, 601, 579, 370, 491, 171, 280, 55, 145, 129, 17, 21, 17, 7, 8),
    (0, 1305, 1363, 3972, 213, 297, 517, 431, 213, 189, 195, 84, 54, 171, 91, 18, 20, 24, 12, 12),
    (0, 584, 385, 213, 1972, 373, 152, 205, 173, 49, 63, 67, 57, 58, 30, 9, 10, 4, 5, 4),
    (0, 483, 513, 297, 373, 2093, 290, 249, 219, 42, 112, 68, 51, 102, 37, 4, 8, 4, 12, 3),
    (0, 553, 601, 517, 152, 290, 2041, 134, 119, 109, 53, 81, 33, 44, 67, 2, 8, 4, 3, 9),
    (0, 580, 579, 431, 205, 249, 134, 2870, 171, 31, 464, 19, 42, 430, 29, 3, 4, 18, 8, 37),
    (0, 355, 370, 213, 173, 219, 119, 171, 1387, 49, 82, 33, 70, 69, 21, 3, 9, 2, 4, 0),
    (0, 320, 491, 189, 49, 42, 109, 31, 49, 1186, 18, 75, 25, 12, 24, 15, 7, 1, 2, 4),
    (0, 234, 171, 195, 63, 112, 53, 464, 82, 18, 1189, 15, 20, 916, 12, 1, 1, 8, 2, 63),
    (0, 425, 280, 84, 67, 68, 81, 19, 33, 75, 15, 1020, 3, 13, 202, 3, 3, 1, 2, 0),
    (0, 105, 55, 54, 57, 51, 33, 42, 70, 25, 20, 3, 548, 14, 3, 5, 8, 0, 3, 1),
    (0, 208, 145, 171, 58, 102, 44, 430, 69, 12, 916, 13, 14, 1034, 11, 0, 1, 11, 0, 51),
    (0, 290, 129, 91, 30, 37, 67, 29, 21, 24, 12, 202, 3, 11, 625, 2, 0, 0, 3, 1),
    (0, 11, 17, 18, 9, 4, 2, 3, 3, 15, 1, 3, 5, 0, 2, 144, 5, 0, 0, 0),
    (0, 10, 21, 20, 10, 8, 8, 4, 9, 7, 1, 3, 8, 1, 0, 5, 87, 0, 1, 0),
    (0, 12, 17, 24, 4, 4, 4, 18, 2, 1, 8, 1, 0, 11, 0, 0, 0, 102, 0, 5),
    (0, 16, 7, 12, 5, 12, 3, 8, 4, 2, 2, 2, 3, 0, 3, 0, 1, 0, 97, 0),
    (0, 50, 8, 12, 4, 3, 9, 37, 0, 4, 63, 0, 1, 51, 1, 0, 0, 5, 0, 165),
)


def nih_valtest_cooccurrence() -> np.ndarray:
    """The real val+test co-occurrence matrix (int64, canonical class order)."""
    return np.array(_NIH_VALTEST_COOCCURRENCE, dtype=np.int64)


def nih_train_prevalence() -> np.ndarray:
    """Per-class prevalence in the real NIH-CXR-LT train split."""
    return np.array(NIH_TRAIN_COUNTS, dtype=np.float64) / NIH_TRAIN_IMAGES
