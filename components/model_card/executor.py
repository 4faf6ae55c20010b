"""ModelCardGenerator executor: the pushed version's facts record, rendered beside the push."""
import os
from typing import Any, Dict, List

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils

from petpark.components.common import facts, storage
from petpark.components.model_card import render

PUSHED_MODEL_KEY, EVALUATION_KEY, BLESSING_KEY = 'pushed_model', 'evaluation', 'model_blessing'
EXAMPLES_KEY, STATISTICS_KEY, SCHEMA_KEY = 'examples', 'statistics', 'schema'
HYPERPARAMETERS_KEY, INFRA_BLESSING_KEY, ONNX_MODEL_KEY = 'hyperparameters', 'infra_blessing', 'onnx_model'
MODEL_CARD_KEY = 'model_card'


DEFAULT_EXPLAIN_STEPS, DEFAULT_MISTAKES, DEFAULT_PHOTOS_PER_SLICE = 32, 6, 2


def _explanations(input_dict: Dict[str, List[artifact.Artifact]], record: Dict[str, Any], stage: str,
                  exec_properties: Dict[str, Any]) -> Dict[str, Any]:
    """Saliency overlays of the evaluated split's most confident mistakes and of photos per slice, on the
    pushed SavedModel; a card without them (saying why) when they cannot be computed."""
    steps = exec_properties.get('explain_steps')
    steps = DEFAULT_EXPLAIN_STEPS if steps is None else int(steps)
    if steps <= 0:
        return {'problem': 'explanations turned off (explain_steps=0)'}
    mistakes = exec_properties.get('explained_mistakes')
    per_slice = exec_properties.get('photos_per_slice')
    try:
        from petpark.components.model_card import explanations  # TensorFlow: only when a card is written
        return explanations.explain_split(
            explanations.model_dir_of(artifact_utils.get_single_instance(input_dict[PUSHED_MODEL_KEY])),
            artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]), record['slices'], stage, steps=steps,
            mistakes=DEFAULT_MISTAKES if mistakes is None else int(mistakes),
            per_slice=DEFAULT_PHOTOS_PER_SLICE if per_slice is None else int(per_slice))
    except Exception as e:  # the card is still written, saying why it has no explanations
        logging.warning('ModelCardGenerator: no explanations: %s: %s', type(e).__name__, e)
        return {'problem': f'{type(e).__name__}: {e}'[:500]}


class Executor(base_executor.BaseExecutor):
    """See component.ModelCardGenerator."""

    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        card = artifact_utils.get_single_instance(output_dict[MODEL_CARD_KEY])
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_MODEL_KEY])
        if not facts.prop(pushed, 'pushed', 0):
            card.set_int_custom_property('written', 0)
            logging.info('ModelCardGenerator: nothing was pushed; no card.')
            return
        record = facts.gather([a for found in input_dict.values() for a in found],
                              model_name=exec_properties['model_name'], code_version=exec_properties['code_version'],
                              class_id=int(exec_properties['positive_class_id']))
        with storage.local_stage(card.uri) as stage:
            record['explanations'] = _explanations(input_dict, record, stage, exec_properties)
            render.write(record, stage)
        base = exec_properties['card_base_directory']
        destination = os.path.join(base, record['version'])
        if fileio.exists(os.path.join(destination, render.CARD_MD)):
            logging.info('ModelCardGenerator: version %s already has its card in %s.', record['version'], destination)
        else:
            storage.remove_leftovers(base, render.CARD_MD)
            storage.publish_atomically(card.uri, destination, render.CARD_MD)
        card.set_int_custom_property('written', 1)
        card.set_string_custom_property('model_version', record['version'])
        card.set_string_custom_property('card_destination', destination)
        card.set_string_custom_property('code_version', exec_properties['code_version'])
        for section, values in record.items():
            facts.contribute(card, section, values)
