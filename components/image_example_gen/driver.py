"""The driver: TFX's FileBasedDriver, resolving spans and input fingerprints of local folders
with listing.py, so a hostile directory entry cannot abort the run before the executor reports it."""
from typing import Iterable, Optional, Tuple

from tfx.components.example_gen import driver, input_processor
from tfx.proto import example_gen_pb2, range_config_pb2

from petpark.components.image_example_gen import listing


class _ImageFolderInputProcessor(input_processor.FileBasedInputProcessor):

    def resolve_span_and_version(self) -> Tuple[int, Optional[int]]:
        if not listing.is_local(self._input_base_uri):
            return super().resolve_span_and_version()
        self._fingerprint, span, version = listing.resolve(self._input_base_uri, list(self._splits),
                                                           self._range_config)
        return span, version


class ImageFolderDriver(driver.FileBasedDriver):
    """Spans, versions and fingerprints as TFX computes them, from a listing that opens nothing."""

    def get_input_processor(self, splits: Iterable[example_gen_pb2.Input.Split],
                            range_config: Optional[range_config_pb2.RangeConfig] = None,
                            input_base_uri: Optional[str] = None) -> input_processor.InputProcessor:
        return _ImageFolderInputProcessor(input_base_uri, splits, range_config)
