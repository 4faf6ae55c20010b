"""A small real pipeline for tests that need Transform output, a trained model or an edge export."""
import os

from petpark.modules import training_config

IMAGE_SIZE = 32


def custom_config(component, search_space=None, algorithm='random', max_trials=2, seed=0):
    """`component`'s custom_config, as the pipeline passes it, for a small and quick model."""
    return training_config.TrainingConfig(
        preprocessing=training_config.PreprocessingConfig(image_size=IMAGE_SIZE),
        model=training_config.ModelConfig(backbone='cnn', backbone_weights=None,
                                          search_space=training_config.search_space_with(search_space)),
        tuning=training_config.TuningConfig(epochs=2, batch_size=8, seed=seed, algorithm=algorithm,
                                            max_trials=max_trials),
        training=training_config.FitConfig(epochs=2, batch_size=8, seed=seed),
        fine_tuning=training_config.FineTuneConfig(epochs=0, steps=1, layers=1, learning_rate=1e-4),
    ).custom_config(component)


def fn_args_for(transformed, work_dir):
    """FnArgs as the Tuner/Trainer executors build them, over the fixture's Transform output
    (custom_config: set by each caller for its component)."""
    from tfx.components.trainer import fn_args_utils
    args = fn_args_utils.get_common_fn_args(
        {'examples': [transformed['examples']], 'transform_graph': [transformed['transform_graph']]},
        {'train_args': '{"num_steps": 6}', 'eval_args': '{"num_steps": 2}'},
        working_dir=os.path.join(work_dir, 'work'))
    args.serving_model_dir = os.path.join(work_dir, 'serving_model')
    args.model_run_dir = os.path.join(work_dir, 'model_run')
    return args


def train_model(transformed, work_dir):
    """A Model artifact whose Format-Serving/ holds a quickly trained petpark SavedModel."""
    from tfx.types import standard_artifacts
    from petpark.modules import trainer
    args = fn_args_for(transformed, work_dir)
    args.custom_config = custom_config('Trainer', search_space={'conv_blocks': [2], 'filters': [8]})
    args.serving_model_dir = os.path.join(work_dir, 'model', 'Format-Serving')
    trainer.run_fn(args)
    model = standard_artifacts.Model()
    model.uri = os.path.join(work_dir, 'model')
    return model


def onnx_exporter_properties(edge_base_directory, **parameters):
    """The OnnxExporter's exec_properties as the pipeline wires it, publishing under `edge_base_directory`."""
    from tfx.types import channel, standard_artifacts
    from petpark.components.onnx_exporter import component
    from petpark.modules import features
    exporter = component.OnnxExporter(
        model=channel.Channel(type=standard_artifacts.Model),
        model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
        examples=channel.Channel(type=standard_artifacts.Examples),
        transform_graph=channel.Channel(type=standard_artifacts.TransformGraph), model_name='petpark',
        edge_base_directory=edge_base_directory, class_names=features.LABELS,
        raw_feature_keys=[features.IMAGE_KEY, features.LABEL_KEY], pixels_key=features.IMAGE_XF,
        label_key=features.LABEL_XF, pixel_contract=features.PIXEL_CONTRACT, signature_name=features.PIXELS_SIGNATURE,
        **parameters)
    return dict(exporter.exec_properties)


def export_inputs(transformed, model, blessed=True, version='1800000000'):
    """The OnnxExporter's input_dict: the Evaluator's blessing and the Pusher's version, as wired."""
    from tfx.types import standard_artifacts
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property('blessed', int(blessed))
    pushed = standard_artifacts.PushedModel()
    pushed.set_string_custom_property('pushed_version', version)
    return {'model': [model], 'model_blessing': [blessing], 'examples': [transformed['raw_examples']],
            'transform_graph': [transformed['transform_graph']], 'pushed_model': [pushed]}


def export_edge(transformed, model, work_dir, blessed=True, version='1800000000', **parameters):
    """Runs the OnnxExporter executor as the pipeline wires it; returns its OnnxModel artifact."""
    from petpark.components.common.artifacts import OnnxModel
    from petpark.components.onnx_exporter import executor
    output = OnnxModel()
    output.uri = os.path.join(work_dir, 'onnx_model', version, str(len(os.listdir(work_dir))))
    executor.Executor().Do(export_inputs(transformed, model, blessed, version), {'onnx_model': [output]},
                           onnx_exporter_properties(os.path.join(work_dir, 'edge', 'petpark'), **parameters))
    return output


def serving_validator_properties(**parameters):
    """The ServingValidator's exec_properties as the pipeline wires it (8 requests unless given)."""
    from tfx.types import channel, standard_artifacts
    from petpark.components.serving_validator import component
    validator = component.ServingValidator(
        model=channel.Channel(type=standard_artifacts.Model), examples=channel.Channel(type=standard_artifacts.Examples),
        model_name='petpark', **{'num_examples': 8, **parameters})
    return dict(validator.exec_properties)


def validate_serving(model, examples, work_dir, **parameters):
    """Runs the ServingValidator executor as the pipeline wires it; returns its InfraBlessing."""
    from tfx.types import standard_artifacts
    from petpark.components.serving_validator import executor
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = os.path.join(work_dir, 'infra_blessing')
    os.makedirs(blessing.uri, exist_ok=True)
    executor.Executor().Do({'model': [model], 'examples': [examples]}, {'blessing': [blessing]},
                           serving_validator_properties(**parameters))
    return blessing


def model_with_unknown_op(model, work_dir, op='PetparkCameraOp'):
    """A copy of `model` whose graph uses an op no TensorFlow build registers, as a model built
    against a custom op library would: it loads where the library is, in no model server."""
    import shutil
    from tensorflow.core.protobuf import saved_model_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import path_utils
    copy = standard_artifacts.Model()
    copy.uri = os.path.join(work_dir, 'unknown_op_model')
    shutil.copytree(model.uri, copy.uri)
    path = os.path.join(path_utils.serving_model_path(copy.uri), 'saved_model.pb')
    saved = saved_model_pb2.SavedModel.FromString(open(path, 'rb').read())
    renamed = 0
    for function in saved.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == 'Relu':
                node.op, renamed = op, renamed + 1
    assert renamed, 'the model has no Relu to replace'
    with open(path, 'wb') as f:
        f.write(saved.SerializeToString())
    os.remove(os.path.join(os.path.dirname(path), 'fingerprint.pb'))
    return copy


def model_with_shifted_biases(model, work_dir, shift=1.0):
    """A copy of `model` whose layers' biases are `shift` higher: same graph, different answers."""
    import shutil
    import tensorflow as tf
    from tfx.types import standard_artifacts
    from tfx.utils import path_utils
    copy = standard_artifacts.Model()
    copy.uri = os.path.join(work_dir, 'shifted_model')
    shutil.copytree(model.uri, copy.uri)
    prefix = os.path.join(path_utils.serving_model_path(copy.uri), 'variables', 'variables')
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    values = [reader.get_tensor(name) + shift if name.endswith('/bias/.ATTRIBUTES/VARIABLE_VALUE') else
              reader.get_tensor(name) for name in names]
    assert sum(name.endswith('/bias/.ATTRIBUTES/VARIABLE_VALUE') for name in names), 'the model has no bias to shift'
    for name in os.listdir(os.path.dirname(prefix)):
        os.remove(os.path.join(os.path.dirname(prefix), name))
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[''] * len(names), tensors=values)
    os.remove(os.path.join(path_utils.serving_model_path(copy.uri), 'fingerprint.pb'))
    return copy
