"""Data sources (NIH-CXR-LT, MIMIC-CXR-LT, CSV, MedMNIST, the synthetic generator), the
``prepare`` stage's label tables and uint8 cache, and the import of published predictions."""
