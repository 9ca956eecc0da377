"""Data phase: obtaining a dataset (download, synthetic generation), validating it, and the split
manifests every later stage reads."""
