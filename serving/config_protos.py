"""TF Serving's config files: text-format parsing, and the MonitoringConfig and
BatchingParameters messages.

tensorflow-serving-api ships ModelServerConfig but not these two (they live in
monitoring_config.proto and session_bundle_config.proto), so they are declared here with
the same package, names and field numbers, and files in TF Serving's text format parse
with protobuf's own text_format.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory

_PACKAGE = 'tensorflow.serving'
_FIELD = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name='petpark/tf_serving_configs.proto', package=_PACKAGE,
                                               syntax='proto3', dependency=['google/protobuf/wrappers.proto'])

    def message(name, *fields):
        msg = proto.message_type.add(name=name)
        for number, (field_name, kind, label, type_name) in enumerate(fields, start=1):
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name

    optional, repeated = _FIELD.LABEL_OPTIONAL, _FIELD.LABEL_REPEATED
    int64_value = '.google.protobuf.Int64Value'
    message('PrometheusConfig', ('enable', _FIELD.TYPE_BOOL, optional, None),
            ('path', _FIELD.TYPE_STRING, optional, None))
    message('MonitoringConfig', ('prometheus_config', _FIELD.TYPE_MESSAGE, optional, f'.{_PACKAGE}.PrometheusConfig'))
    message('BatchingParameters',
            ('max_batch_size', _FIELD.TYPE_MESSAGE, optional, int64_value),
            ('batch_timeout_micros', _FIELD.TYPE_MESSAGE, optional, int64_value),
            ('max_enqueued_batches', _FIELD.TYPE_MESSAGE, optional, int64_value),
            ('num_batch_threads', _FIELD.TYPE_MESSAGE, optional, int64_value),
            ('thread_pool_name', _FIELD.TYPE_MESSAGE, optional, '.google.protobuf.StringValue'),
            ('allowed_batch_sizes', _FIELD.TYPE_INT64, repeated, None),
            ('pad_variable_length_inputs', _FIELD.TYPE_BOOL, optional, None))
    return proto


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
    wrappers_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
_pool.AddSerializedFile(_file().SerializeToString())
_factory = message_factory.MessageFactory(_pool)  # protobuf 3.20: no GetMessageClass yet
MonitoringConfig = _factory.GetPrototype(_pool.FindMessageTypeByName(f'{_PACKAGE}.MonitoringConfig'))
BatchingParameters = _factory.GetPrototype(_pool.FindMessageTypeByName(f'{_PACKAGE}.BatchingParameters'))


def parse_text(path: str, message_class):
    """A text-format file as `message_class`; errors name the file and the type, as TF Serving's do."""
    message = message_class()
    with open(path) as f:
        try:
            text_format.Parse(f.read(), message)
        except text_format.ParseError as e:
            raise ValueError(f'Error parsing text-format {message.DESCRIPTOR.full_name}: {path}: {e}') from None
    return message
