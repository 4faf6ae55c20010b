"""The driver: TFX's FileBasedDriver, resolving spans and input fingerprints of local folders
with listing.py, so a hostile directory entry cannot abort the run before the executor reports it."""
from typing import Any, Dict, Iterable, List, Optional, Tuple

from tfx import types
from tfx.components.example_gen import driver, input_processor
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2, range_config_pb2

from petpark.components.common.uris import is_local
from petpark.components.image_example_gen import listing


class _ImageFolderInputProcessor(input_processor.FileBasedInputProcessor):

    def resolve_span_and_version(self) -> Tuple[int, Optional[int]]:
        if not is_local(self._input_base_uri):
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

    def _prepare_output_artifacts(self, input_artifacts: Dict[str, List[types.Artifact]],
                                  output_dict: Dict[str, types.Channel], exec_properties: Dict[str, Any],
                                  execution_id: int, pipeline_info: data_types.PipelineInfo,
                                  component_info: data_types.ComponentInfo) -> Dict[str, List[types.Artifact]]:
        """Legacy launchers (Airflow): TFX's ExampleGen driver prepares only `examples`; the
        ingestion report gets its URI as any other component output does."""
        result = super()._prepare_output_artifacts(input_artifacts, output_dict, exec_properties, execution_id,
                                                   pipeline_info, component_info)
        others = {name: channel for name, channel in output_dict.items() if name not in result}
        result.update(base_driver.BaseDriver._prepare_output_artifacts(
            self, input_artifacts, others, exec_properties, execution_id, pipeline_info, component_info))
        return result
