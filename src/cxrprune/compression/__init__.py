"""Compression of a trained model (one module per method under ``methods/``), batched
prediction, and the prediction-table contract."""
