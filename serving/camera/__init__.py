"""The camera loop (`petpark camera`, or `python -m petpark.serving.camera` on a camera box): live
streams in, debounced cat/dog events out, with the edge runtime (ONNX) or a model server over gRPC.

sources: streams and files to decoded frames, newest wins; backends: frames to scores; events:
scores to debounced presences; status: the numbers a person and Prometheus see; loop: the wiring.
Nothing here imports TensorFlow (docs/cameras.md).
"""
