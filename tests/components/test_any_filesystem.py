"""Every custom executor with its artifacts and its push, edge and card destinations on a non-local
filesystem: TF's ram:// (reached through TFX's fileio, as gs:// would be), results read back through
fileio. A component that wrote with os/open would leave a local folder named `ram:` (checked) or
nothing at the URI. The ModelCardGenerator's test needs an Evaluator output: tests/pipeline/test_e2e.py.

Beam writes through its own filesystems, which do not know ram://: RamFileSystem below is Beam's
view of it through tf.io.gfile, for this test only, standing in for Beam's gs:// filesystem.
"""
import gzip
import hashlib
import io
import json
import os
import posixpath
import uuid

import onnx
import pytest
import tensorflow as tf
from apache_beam.io import filesystem as beam_filesystem
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, pusher_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import io_utils, proto_utils

from tests.pipeline_fixtures import export_inputs, onnx_exporter_properties, serving_validator_properties


class _RamWriter(io.BytesIO):
    """Collects a file's bytes and writes them whole on close (ram:// files cannot tell())."""
    mode = 'wb'

    def __init__(self, path):
        super().__init__()
        self._path = path

    def close(self):
        if not self.closed:
            with tf.io.gfile.GFile(self._path, 'wb') as f:
                f.write(self.getvalue())
        super().close()


class _RamReader(io.BytesIO):
    mode = 'rb'


class RamFileSystem(beam_filesystem.FileSystem):
    """Beam's filesystem for the `ram` scheme, through tf.io.gfile (Beam finds it by its scheme)."""

    @classmethod
    def scheme(cls):
        return 'ram'

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        return posixpath.split(path)

    def mkdirs(self, path):
        tf.io.gfile.makedirs(path)

    def has_dirs(self):
        return True

    def _list(self, dir_or_prefix):
        if not tf.io.gfile.exists(dir_or_prefix):
            return
        for folder, _, files in tf.io.gfile.walk(dir_or_prefix):
            for name in files:
                yield self.metadata(self.join(folder, name))

    def _compressed(self, raw, path, compression_type):
        compression_type = self._get_compression_type(path, compression_type)
        if compression_type == beam_filesystem.CompressionTypes.UNCOMPRESSED:
            return raw
        return beam_filesystem.CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type='application/octet-stream',
               compression_type=beam_filesystem.CompressionTypes.AUTO):
        tf.io.gfile.makedirs(posixpath.dirname(path))
        return self._compressed(_RamWriter(path), path, compression_type)

    def open(self, path, mime_type='application/octet-stream',
             compression_type=beam_filesystem.CompressionTypes.AUTO):
        with tf.io.gfile.GFile(path, 'rb') as f:
            return self._compressed(_RamReader(f.read()), path, compression_type)

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            tf.io.gfile.copy(source, destination, overwrite=True)

    def rename(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            tf.io.gfile.makedirs(posixpath.dirname(destination))
            tf.io.gfile.rename(source, destination, overwrite=True)

    def exists(self, path):
        return tf.io.gfile.exists(path)

    def size(self, path):
        return tf.io.gfile.stat(path).length

    def last_updated(self, path):
        return tf.io.gfile.stat(path).mtime_nsec / 1e9

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return beam_filesystem.FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        failed = {}
        for path in paths:
            try:
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
            except tf.errors.OpError as e:
                failed[path] = e
        if failed:
            raise beam_filesystem.BeamIOError('Delete operation failed', failed)


@pytest.fixture
def ram(tmp_path, monkeypatch):
    """A fresh ram:// root; the test runs in tmp_path, so a path written with os would land there.
    ram:// lists by bare prefix: sibling names under it must not start with one another."""
    monkeypatch.chdir(tmp_path)
    root = f'ram://petpark-{uuid.uuid4().hex[:8]}'
    yield root
    assert not os.path.exists(tmp_path / 'ram:'), 'something wrote the URI as a local path'
    for path in files_under(root):  # the memory back (ram:// removes folders unreliably)
        fileio.remove(posixpath.join(root, path))


def files_under(root):
    """Paths of every file under `root`, relative to it (through fileio)."""
    return sorted(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, '/')
                  for folder, _, names in fileio.walk(root) for name in names)


def read_bytes(path):
    with fileio.open(path, 'rb') as f:
        return f.read()


def read_json(path):
    return json.loads(read_bytes(path))


def on_ram(artifact, root, name):
    """A copy of `artifact` whose files are under `root/name` (copied through fileio)."""
    proto = type(artifact.mlmd_artifact)()
    proto.CopyFrom(artifact.mlmd_artifact)
    copy = type(artifact)()
    copy.set_mlmd_artifact(proto)
    copy.uri = posixpath.join(root, name)
    io_utils.copy_dir(artifact.uri, copy.uri)
    return copy


def output(artifact_class, root, name):
    artifact = artifact_class()
    artifact.uri = posixpath.join(root, name)
    return artifact


def records_of(pattern):
    """tf.Examples of the gzipped TFRecord files matching `pattern`, read through fileio."""
    examples = []
    for path in fileio.glob(pattern):
        data = gzip.decompress(read_bytes(path))
        while data:  # TFRecord framing: length (8 bytes), its CRC (4), the record, the record's CRC (4)
            length = int.from_bytes(data[:8], 'little')
            examples.append(tf.train.Example.FromString(data[12:12 + length]))
            data = data[16 + length:]
    return examples


def test_image_example_gen_writes_examples_and_report_to_the_uri(ram, tmp_path):
    from petpark.components.image_example_gen import component, executor, report
    from petpark.pipeline import synthetic_data
    from petpark.pipeline.runners import beam
    data = tmp_path / 'photos'
    synthetic_data.generate(str(data), 16, seed=4)
    (data / 'cat' / 'empty.jpg').write_bytes(b'')
    examples, ingestion = output(standard_artifacts.Examples, ram, 'examples'), output(
        component.IngestionReport, ram, 'report')
    gen = component.ImageExampleGen(input_base=str(data), class_names=('cat', 'dog'), input_pattern='*/*',
                                    max_bad_fraction=0.5)
    properties = dict(gen.exec_properties, output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                      output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    context = executor.Executor.Context(beam_pipeline_args=beam.beam_pipeline_args(1), tmp_dir=str(tmp_path / 'beam'))
    executor.Executor(context).Do({}, {'examples': [examples], 'ingestion_report': [ingestion]}, properties)

    found = read_json(posixpath.join(ingestion.uri, report.REPORT_FILE))
    assert found['total_files'] == 17 and found['examples'] == 16 and found['rejected'] == {'empty_file': 1}
    assert files_under(ingestion.uri) == [report.REPORT_FILE]  # the Beam parts were removed
    written = {split: records_of(posixpath.join(artifact_utils.get_split_uri([examples], split), '*.gz'))
               for split in ('train', 'eval')}
    assert sum(len(found) for found in written.values()) == 16 and all(written.values())


def test_anomalies_gate_reads_the_verdicts_and_writes_the_schema_through_fileio(ram):
    from tensorflow_metadata.proto.v0 import anomalies_pb2
    from petpark.components.anomalies_gate import executor
    schema = output(standard_artifacts.Schema, ram, 'schema')
    io_utils.write_string_file(posixpath.join(schema.uri, 'schema.pbtxt'), 'feature { name: "label" type: BYTES }\n')

    def anomalies(name, verdict, found):
        artifact = output(standard_artifacts.ExampleAnomalies, ram, name)
        artifact.split_names = artifact_utils.encode_split_names(['train'])
        io_utils.write_bytes_file(posixpath.join(artifact.uri, 'Split-train', 'SchemaDiff.pb'), found.SerializeToString())
        artifact.set_json_value_custom_property('blessed', {'train': verdict})
        return artifact

    validated = output(standard_artifacts.Schema, ram, 'validated')
    executor.Executor().Do({'anomalies': [anomalies('clean', 1, anomalies_pb2.Anomalies())], 'schema': [schema]},
                           {'validated_schema': [validated]}, {})
    assert read_bytes(posixpath.join(validated.uri, 'schema.pbtxt')).startswith(b'feature { name: "label"')

    bad = anomalies_pb2.Anomalies()
    bad.anomaly_info['label'].short_description = 'Unexpected string values'
    bad.anomaly_info['label'].description = 'values missing from the schema: rabbit'
    with pytest.raises(executor.DataAnomaliesError, match="split train: feature 'label'.*rabbit"):
        executor.Executor().Do({'anomalies': [anomalies('anomalous', 0, bad)], 'schema': [schema]},
                               {'validated_schema': [output(standard_artifacts.Schema, ram, 'not_validated')]}, {})


def test_serving_validator_serves_a_model_from_the_uri_and_writes_its_blessing_there(ram, transformed, trained_model):
    from petpark.components.serving_validator import executor
    model = on_ram(trained_model, ram, 'model')
    examples = on_ram(transformed['raw_examples'], ram, 'examples')
    blessing = output(standard_artifacts.InfraBlessing, ram, 'infra_blessing')
    executor.Executor().Do({'model': [model], 'examples': [examples]}, {'blessing': [blessing]},
                           serving_validator_properties())
    assert blessing.get_int_custom_property('blessed') == 1, blessing.get_string_custom_property('reason')
    assert files_under(blessing.uri) == ['INFRA_BLESSED']
    assert blessing.has_custom_property('max_abs_difference')


def push_to(ram, model, run):
    from petpark.components.serving_pusher import executor
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property('blessed', 1)
    pushed = output(standard_artifacts.PushedModel, ram, f'pushed_model_{run}')
    destination = pusher_pb2.PushDestination(filesystem=pusher_pb2.PushDestination.Filesystem(
        base_directory=posixpath.join(ram, 'serving', 'petpark')))
    executor.Executor().Do({'model': [model], 'model_blessing': [blessing]}, {'pushed_model': [pushed]},
                           {'push_destination': proto_utils.proto_to_json(destination)})
    return pushed


def test_serving_pusher_publishes_a_version_on_the_uri_once(ram, trained_model):
    model = on_ram(trained_model, ram, 'model')
    first = push_to(ram, model, 1)
    version = first.get_string_custom_property('pushed_version')
    assert first.get_int_custom_property('pushed') == 1 and version.isdigit()
    served = posixpath.join(ram, 'serving', 'petpark')
    assert first.get_string_custom_property('pushed_destination') == posixpath.join(served, version)
    assert fileio.listdir(served) == [version]  # no staging folder, no second version
    model_files = files_under(posixpath.join(model.uri, 'Format-Serving'))
    assert files_under(posixpath.join(served, version)) == model_files and 'saved_model.pb' in model_files
    assert files_under(first.uri) == model_files
    loaded = tf.saved_model.load(posixpath.join(served, version))
    assert 'serving_default' in loaded.signatures

    again = push_to(ram, model, 2)
    assert again.get_string_custom_property('pushed_version') == version and fileio.listdir(served) == [version]


def test_onnx_exporter_publishes_a_proven_export_on_the_uri(ram, transformed, trained_model):
    from petpark.components.common.artifacts import OnnxModel
    from petpark.components.onnx_exporter import executor
    on_ram_inputs = {'raw_examples': on_ram(transformed['raw_examples'], ram, 'examples'),
                     'transform_graph': on_ram(transformed['transform_graph'], ram, 'transform_graph')}
    inputs = export_inputs(on_ram_inputs, on_ram(trained_model, ram, 'model'))
    edge = posixpath.join(ram, 'edge', 'petpark')
    properties = onnx_exporter_properties(edge, max_int8_accuracy_drop=1.0)
    exported = output(OnnxModel, ram, 'onnx_model')
    executor.Executor().Do(inputs, {'onnx_model': [exported]}, properties)

    assert exported.get_int_custom_property('exported') == 1
    assert fileio.listdir(edge) == ['1800000000']
    folder = posixpath.join(edge, '1800000000')
    assert files_under(folder) == ['metadata.json', 'model.int8.onnx', 'model.onnx'] == files_under(exported.uri)
    metadata = read_json(posixpath.join(folder, 'metadata.json'))
    fp32 = read_bytes(posixpath.join(folder, 'model.onnx'))
    onnx.checker.check_model(onnx.load_from_string(fp32))
    assert metadata['sha256']['model.onnx'] == hashlib.sha256(fp32).hexdigest()
    assert metadata['source']['model_uri'] == inputs['model'][0].uri and metadata['parity']['max_abs_difference'] <= 1e-4
    assert exported.get_string_custom_property('edge_destination') == folder

    again = output(OnnxModel, ram, 'second_export')
    executor.Executor().Do(inputs, {'onnx_model': [again]}, properties)  # the same model: not published again
    assert again.get_int_custom_property('exported') == 1 and read_json(posixpath.join(folder, 'metadata.json')) == metadata
