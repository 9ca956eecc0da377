"""Deployment phase: ONNX export with parity gates, the FP16 graph, and TensorRT engines."""
