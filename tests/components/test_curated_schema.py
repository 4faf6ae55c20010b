"""CuratedSchemaGen: an edited schema file is a new cache key; the import is ImportSchemaGen's."""
import os

from tfx.components.schema_gen.import_schema_gen import executor
from tfx.types import standard_artifacts

from petpark.components.curated_schema import component


def test_the_schema_content_is_part_of_the_cache_key_and_the_import_is_tfx_s(tmp_path):
    path = tmp_path / 'schema.pbtxt'
    path.write_text('feature { name: "label" type: BYTES }\n')
    first = component.CuratedSchemaGen(schema_file=str(path))
    same = component.CuratedSchemaGen(schema_file=str(path))
    path.write_text('feature { name: "label" type: BYTES }\nfeature { name: "camera_id" type: BYTES }\n')
    edited = component.CuratedSchemaGen(schema_file=str(path))
    assert first.exec_properties['schema_sha256'] == same.exec_properties['schema_sha256']
    assert edited.exec_properties['schema_sha256'] != first.exec_properties['schema_sha256']
    assert first.exec_properties['schema_file'] == str(path) and first.EXECUTOR_SPEC.executor_class is executor.Executor
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / 'out')
    executor.Executor().Do({}, {'schema': [schema]}, dict(edited.exec_properties))
    assert 'camera_id' in open(os.path.join(schema.uri, 'schema.pbtxt')).read()
