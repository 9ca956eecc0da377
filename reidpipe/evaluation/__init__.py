"""Evaluation phase: embedding extraction (PyTorch or ONNX Runtime), the Market-1501 protocol
(CMC, mAP, mINP) and k-reciprocal re-ranking."""
