"""Synthetic chest X-ray dataset with the NIH-CXR-LT label structure (labels, rendering, layout)."""
