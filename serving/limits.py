"""What one client may cost the server, checked before anything large is built.

Every bound has a `petpark serve` flag of the same name (README, "Limits"). Requests over a
bound are refused with INVALID_ARGUMENT (HTTP 400) naming the bound and its flag; too many
requests at once with RESOURCE_EXHAUSTED (HTTP 429). TensorFlow is not imported here.
"""
import argparse
import dataclasses
import io
import math
import warnings
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from petpark.serving import errors

# The server checks pixel counts itself (max_image_pixels); Pillow's warning would only add noise,
# as would protobuf's about bytes that only look like a tf.Example.
warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)
warnings.filterwarnings('ignore', message='Unexpected end-group tag', category=RuntimeWarning)
_EXAMPLE_TAG = b'\n'  # a serialized tf.Example starts with its field 1 (features), length-delimited


@dataclasses.dataclass(frozen=True)
class Limits:
    max_batch_size: int = 256
    max_image_pixels: int = 40_000_000
    max_tensor_elements: int = 16_777_216
    max_request_bytes: int = 64 * 1024 * 1024
    max_json_depth: int = 32
    max_inflight_requests: int = 256
    max_rest_connections: int = 512
    max_grpc_connections: int = 1024
    rest_idle_timeout_seconds: float = 30.0
    request_timeout_seconds: float = 30.0
    grpc_handshake_timeout_seconds: float = 5.0
    grpc_idle_timeout_seconds: float = 300.0
    grpc_max_streams_per_connection: int = 128
    grpc_max_connection_age_seconds: float = 600.0

    HELP = {
        'max_batch_size': 'rows in one request: instances, examples or the first dimension of an input',
        'max_image_pixels': 'width x height of any encoded image in a request, read from its header before decoding',
        'max_tensor_elements': 'elements of one input tensor, checked before it is built or broadcast',
        'max_request_bytes': 'bytes of one REST body or gRPC message',
        'max_json_depth': 'nesting depth of a REST JSON body',
        'max_inflight_requests': 'requests waiting for or running in a model, REST and gRPC together; '
                                 'beyond it RESOURCE_EXHAUSTED / 429',
        'max_rest_connections': 'open REST connections (lowered to fit the open-files limit); beyond it the oldest '
                                'connection with no request in progress is closed, or the new one when all are busy',
        'max_grpc_connections': 'open gRPC connections (lowered to fit the open-files limit); further ones are closed at once',
        'rest_idle_timeout_seconds': 'a REST connection with no request in progress is closed after this',
        'request_timeout_seconds': "a REST request's body must arrive within this",
        'grpc_handshake_timeout_seconds': 'a gRPC connection must finish its HTTP/2 handshake (preface, SETTINGS and '
                                          'the SETTINGS acknowledgement) within this',
        'grpc_idle_timeout_seconds': 'a gRPC connection with no call in progress is closed after this',
        'grpc_max_streams_per_connection': 'concurrent gRPC calls on one connection (HTTP/2 MAX_CONCURRENT_STREAMS); '
                                           'further calls wait in the client until one ends, none is refused',
        'grpc_max_connection_age_seconds': 'a gRPC connection is asked to go away after this (calls in '
                                           'progress get 30 s more); clients reconnect',
    }

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        for field in dataclasses.fields(cls):
            parser.add_argument(f'--{field.name}', type=positive(field.type), default=field.default,
                                help=f'{cls.HELP[field.name]} (default {field.default})')

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'Limits':
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def exceeded(self, name: str, value: Any, what: str) -> errors.ServingError:
        return errors.invalid_argument(f'{what} is {value}, above the server limit {name}={getattr(self, name)} '
                                       f'(petpark serve --{name})')

    def check_rows(self, rows: int, what: str) -> None:
        if rows > self.max_batch_size:
            raise self.exceeded('max_batch_size', rows, what)

    def check_shape(self, shape: Sequence[int], alias: str) -> None:
        """A tensor's declared shape: no negative dimension, batch and element count within bounds."""
        if any(d < 0 for d in shape):
            raise errors.invalid_argument(f'Input {alias}: negative dimension in shape {list(shape)}')
        if shape:
            self.check_rows(shape[0], f'The batch size of input {alias}')
        elements = math.prod(shape)
        if elements > self.max_tensor_elements:
            raise self.exceeded('max_tensor_elements', elements, f'The number of elements of input {alias} {list(shape)}')

    def check_inputs(self, inputs: Dict[str, np.ndarray]) -> None:
        """Shapes, and the size of every encoded image among string inputs (also inside tf.Examples)."""
        for alias, value in inputs.items():
            self.check_shape(np.shape(value), alias)
            if np.asarray(value).dtype == object:
                for data in np.asarray(value).ravel():
                    if isinstance(data, bytes):
                        self._check_encoded(data, alias)

    def _check_encoded(self, data: bytes, alias: str) -> None:
        for pixels, described in _images_in(data):
            if pixels > self.max_image_pixels:
                raise self.exceeded('max_image_pixels', described, f'The pixel count of an image in input {alias}')


# Descriptors kept out of the connection budget: 128 for model files being loaded, logs, TensorFlow's and
# gRPC's own, and 128 for connections accepted only to be closed (the REST loop accepts up to its listen
# backlog, 32, at once before it closes any). A tiny open-files limit still gets some connections.
RESERVED_DESCRIPTORS = 256
MIN_CONNECTION_BUDGET = 16


def fit_connections(limits: Limits, open_files_limit: int, open_now: int, rest: bool) -> Limits:
    """`limits` with max_grpc_connections and max_rest_connections lowered so that connections cannot take
    the descriptors the server needs: the open-files limit less those open now and RESERVED_DESCRIPTORS,
    REST (when served) taking at most half. The flags still cap each API."""
    budget = max(open_files_limit - open_now - RESERVED_DESCRIPTORS, MIN_CONNECTION_BUDGET)
    if not rest:
        return dataclasses.replace(limits, max_grpc_connections=min(limits.max_grpc_connections, budget))
    rest_connections = min(limits.max_rest_connections, budget // 2)
    return dataclasses.replace(limits, max_rest_connections=rest_connections,
                               max_grpc_connections=min(limits.max_grpc_connections, budget - rest_connections))


def positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be above 0, got {text}')
        return value
    return parse


def _image_pixels(data: bytes) -> Optional[Tuple[int, str]]:
    """(pixels, description) from an encoded image's header, without decoding it; None for non-images."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return width * height, f'{width * height} ({width} x {height})'
    except Image.DecompressionBombError:  # Pillow refuses to even open it: over twice its own bound
        return 2 * Image.MAX_IMAGE_PIXELS + 1, f'over {2 * Image.MAX_IMAGE_PIXELS}'
    except (OSError, ValueError, SyntaxError):
        return None


def _images_in(data: bytes) -> Iterable[Tuple[int, str]]:
    """Pixel counts of the image `data` is, or of the images a serialized tf.Example holds."""
    found = _image_pixels(data)
    if found is not None:
        yield found
        return
    if not data.startswith(_EXAMPLE_TAG):
        return
    from tensorflow.core.example import example_pb2  # protobuf only; TF is loaded by then anyway
    try:
        example = example_pb2.Example.FromString(data)
    except Exception:  # protobuf's DecodeError: not an Example either
        return
    for feature in example.features.feature.values():
        for value in feature.bytes_list.value:
            found = _image_pixels(value)
            if found is not None:
                yield found
