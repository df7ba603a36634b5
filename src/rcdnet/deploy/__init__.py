"""Deployment: ONNX export of the decision function (verified against PyTorch) and INT8 quantisation. The ONNX
Runtime predictor itself lives in :mod:`rcdnet.predict.onnx`."""
