"""Converts blessed models to proven ONNX files for TensorFlow-free edge boxes."""
