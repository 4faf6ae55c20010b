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
