"""The shared base: typed config, errors, atomic output, file digests, class names, output layout,
CPU/GPU runtime helpers and the MLflow store and run records."""
