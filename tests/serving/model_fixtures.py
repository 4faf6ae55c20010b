"""A half_plus_two-style SavedModel (TF Serving's standard conformance fixture), built here, and
the servers and held models tests run it behind."""
import os
import shutil
import threading
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from petpark.modules.trainer import set_method_names
from petpark.serving import tf_servable
from petpark.serving.concurrency import InferencePool
from petpark.serving.grpc_service import GrpcServer
from petpark.serving.limits import Limits
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore, Servable


def build_linear_model(path: str, slope: float = 0.5, intercept: float = 2.0) -> None:
    """y = slope * x + intercept, with predict, classify, regress and a two-input `echo` signature."""
    module = tf.Module()
    module.a, module.b = tf.Variable(slope), tf.Variable(intercept)

    def y(x):
        return module.a * x + module.b

    def parse(inputs):
        return tf.io.parse_example(inputs, {'x': tf.io.FixedLenFeature([1], tf.float32)})['x']

    predict = tf.function(lambda x: {'y': y(x)}, input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
    classify = tf.function(lambda inputs: {'scores': y(parse(inputs))},
                           input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
    regress = tf.function(lambda inputs: {'outputs': tf.reshape(y(parse(inputs)), [-1])},
                          input_signature=[tf.TensorSpec([None], tf.string, name='inputs')])
    echo = tf.function(lambda text, count: {'text_bytes': text, 'count': count * 2},
                       input_signature=[tf.TensorSpec([None], tf.string, name='text'),
                                        tf.TensorSpec([None], tf.int64, name='count')])
    tf.saved_model.save(module, path, signatures={
        'serving_default': predict, 'classify_x_to_y': classify, 'regress_x_to_y': regress, 'echo': echo})
    set_method_names(path, {'classify_x_to_y': tf.saved_model.CLASSIFY_METHOD_NAME,
                            'regress_x_to_y': tf.saved_model.REGRESS_METHOD_NAME})


def serve_linear_model(base: str, name: str = 'half_plus_two', version: int = 123) -> ModelStore:
    """A started ModelStore serving a fresh half_plus_two at `base`/`version`, labelled stable."""
    build_linear_model(os.path.join(base, str(version)))
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base, model_platform='tensorflow')
    model.version_labels['stable'] = version
    store = ModelStore(config, tf_servable.load)
    store.start(poll_seconds=0)
    return store


def make_server(store: ModelStore, host: str, port: int, metrics: Optional[ServingMetrics] = None,
                pool: Optional[InferencePool] = None, limits: Optional[Limits] = None) -> Tuple[GrpcServer, int]:
    """A gRPC server, bound and ready to start; returns it and the bound port."""
    limits = limits or Limits()
    pool = pool or InferencePool(workers=64, max_inflight=limits.max_inflight_requests)
    server = GrpcServer(store, host, port, metrics or ServingMetrics(), pool, limits)
    return server, server.port


class HeldModel(Servable):
    """A loaded model whose calls wait until `release` is set; `wait_for_calls(n)` returns once n
    calls have reached it, so a test knows what is running without timing anything."""

    def __init__(self, inner: Servable):
        super().__init__()
        self.inner, self.release, self.calls = inner, threading.Event(), 0
        self._arrived = threading.Condition()

    def __getattr__(self, name):  # version, signature(), signature_def_map() ...
        return getattr(self.inner, name)

    def run(self, *args, **kwargs):
        with self._arrived:
            self.calls += 1
            self._arrived.notify_all()
        self.release.wait()
        return self.inner.run(*args, **kwargs)

    def wait_for_calls(self, count: int, timeout: float = 30) -> None:
        with self._arrived:
            assert self._arrived.wait_for(lambda: self.calls >= count, timeout), f'{self.calls} of {count} calls arrived'


def serve_held_linear_model(base: str, name: str = 'half_plus_two', version: int = 123) -> Tuple[ModelStore, HeldModel]:
    """serve_linear_model, its one version behind a HeldModel."""
    build_linear_model(os.path.join(base, str(version)))
    held = []

    def load(*args) -> HeldModel:
        held.append(HeldModel(tf_servable.load(*args)))
        return held[-1]
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base, model_platform='tensorflow')
    store = ModelStore(config, load)
    store.start(poll_seconds=0)
    return store, held[0]


def push_like_tfx(source: str, destination: str) -> None:
    """Copies a SavedModel the way TFX's Pusher does: saved_model.pb last."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns('saved_model.pb'))
    shutil.copy(os.path.join(source, 'saved_model.pb'), os.path.join(destination, 'saved_model.pb'))


def linear_predict_request(name: str = 'half_plus_two', values=(1.0, 2.0), signature: str = '') -> predict_pb2.PredictRequest:
    """A gRPC PredictRequest of float `x` values for the linear model."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.array(values, dtype=np.float32)))
    return request


IMAGE_SIZE = 16


def build_image_model(path: str) -> None:
    """A small image model: `serving_default` takes encoded images (decoded and resized in the
    graph, as petpark's models do) and returns their mean brightness; `pixels` takes float
    pixels [N, 16, 16, 3]; `slow` spins for about a second per call (a busy model)."""
    module = tf.Module()

    def brightness(pixels):
        return {'brightness': tf.reduce_mean(pixels, axis=[1, 2, 3])}

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32) / 255.0, [IMAGE_SIZE, IMAGE_SIZE])

    images = tf.function(lambda image_bytes: brightness(tf.map_fn(
        decode, image_bytes, fn_output_signature=tf.TensorSpec([IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32))),
        input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    pixels = tf.function(brightness, input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32,
                                                                    name='pixels')])

    def spin(x):
        total = tf.while_loop(lambda i, t: i < 100_000, lambda i, t: (i + 1, t + x), (tf.constant(0), x))[1]
        return {'y': total}

    slow = tf.function(spin, input_signature=[tf.TensorSpec([None], tf.float32, name='x')])
    tf.saved_model.save(module, path, signatures={'serving_default': images, 'pixels': pixels, 'slow': slow})


def build_brightness_classifier(path: str, flip_levels: Tuple[int, int] = (0, 0)) -> None:
    """A two-class image model on petpark's image-bytes signature: P(dog) is the image's mean
    brightness. Images whose (whole-image) grey level lies in [flip_levels) get 1 - P(dog): a canary
    that changes those decisions and no other."""
    low, high = (level / 255.0 for level in flip_levels)

    def scores(image_bytes):
        def brightness(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.reduce_mean(tf.cast(image, tf.float32)) / 255.0
        positive = tf.map_fn(brightness, image_bytes, fn_output_signature=tf.float32)
        in_band = tf.logical_and(positive >= low - 1e-6, positive < high - 1e-6)
        positive = tf.where(in_band, 1.0 - positive, positive)
        return {'scores': tf.stack([1.0 - positive, positive], axis=1)}

    signature = tf.function(scores, input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
    tf.saved_model.save(tf.Module(), path, signatures={'serving_image_bytes': signature, 'serving_default': signature})


def grey_png(level: int) -> bytes:
    """An 8x8 PNG of one grey level."""
    return tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(level, tf.uint8))).numpy()
