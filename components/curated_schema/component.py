"""CuratedSchemaGen: TFX's ImportSchemaGen whose cache key includes the schema file's content."""
import hashlib

from tfx.components.schema_gen.import_schema_gen import executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

CONTENT_KEY = 'schema_sha256'


class CuratedSchemaGenSpec(standard_component_specs.ImportSchemaGenSpec):
    """ImportSchemaGen's spec, plus the file's sha256 (which its executor does not read)."""
    PARAMETERS = {**standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
                  CONTENT_KEY: ExecutionParameter(type=str)}


def file_sha256(path: str) -> str:
    from tfx.dsl.io import fileio
    with fileio.open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


class CuratedSchemaGen(base_component.BaseComponent):
    """Imports the curated schema file as TFX's ImportSchemaGen does (same executor, same output),
    but TFX's cache, which knows the file only by its path, sees an edited file as a new input:
    its content hash is an execution property, so a run after an edit validates, transforms and
    monitors with the edited schema instead of the cached copy of the old one."""
    SPEC_CLASS = CuratedSchemaGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, schema_file: str):
        super().__init__(spec=CuratedSchemaGenSpec(
            schema_file=schema_file, schema_sha256=file_sha256(schema_file),
            schema=channel.Channel(type=standard_artifacts.Schema)))
