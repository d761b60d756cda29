"""What compression does: per-class metrics and the paired test (``evaluate``), forgettability,
FCD, PIEs, weight magnitudes, the summary and the figures (``analyze``)."""
