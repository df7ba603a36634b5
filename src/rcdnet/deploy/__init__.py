"""Deployment: ONNX export (verified, optionally INT8) and an ONNX Runtime predictor."""
