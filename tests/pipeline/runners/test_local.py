"""The local runner's pipeline: a data setting reaches the component that enforces it."""
import json
import os

from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from petpark.components.image_example_gen import component, executor, report
from petpark.pipeline import settings as config, synthetic_data
from petpark.pipeline.runners import local as local_runner


def test_petpark_max_file_bytes_reaches_image_example_gen_and_rejects_a_larger_file(tmp_path):
    data = tmp_path / 'photos'
    synthetic_data.generate(str(data), 20, seed=2)  # one bad file in 21: within max_bad_fraction
    largest = max(os.path.getsize(path) for path in data.glob('*/*.jpg'))
    (data / 'cat' / 'big.jpg').write_bytes(next((data / 'cat').glob('*.jpg')).read_bytes() + b'\0' * largest)
    settings = config.Settings.from_env(environ={'PETPARK_HOME': str(tmp_path / 'home'), 'PETPARK_DATA_ROOT': str(data),
                                                 'PETPARK_MAX_FILE_BYTES': str(largest)})
    pipeline = local_runner.local_pipeline(settings)
    (example_gen,) = [node for node in pipeline.components if node.id == 'ImageExampleGen']
    assert example_gen.exec_properties['max_file_bytes'] == largest

    examples, ingestion = standard_artifacts.Examples(), component.IngestionReport()
    examples.uri, ingestion.uri = str(tmp_path / 'examples'), str(tmp_path / 'report')
    properties = dict(example_gen.exec_properties, output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                      output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    context = executor.Executor.Context(beam_pipeline_args=pipeline.beam_pipeline_args, tmp_dir=str(tmp_path / 'beam'))
    executor.Executor(context).Do({}, {'examples': [examples], 'ingestion_report': [ingestion]}, properties)
    with open(os.path.join(ingestion.uri, report.REPORT_FILE)) as f:
        found = json.load(f)
    assert found['rejected'] == {'too_large': 1} and found['examples'] == 20
    assert [(f['image'], f['detail']) for f in found['rejected_files']] == [
        ('cat/big.jpg', f'more than max_file_bytes={largest} bytes')]
