"""Delivery of trained runs: ONNX export, file prediction, the REST service."""
