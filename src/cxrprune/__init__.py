"""cxrprune: what pruning does to a long-tailed, multi-label chest X-ray classifier.

A DVC pipeline tracked in MLflow that reproduces Holste et al. (MICCAI 2023).
"""

__version__ = "0.1.0"
