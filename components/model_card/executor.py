"""ModelCardGenerator executor: the facts of a pushed version, rendered beside the push."""
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils

from petpark.components.model_card import facts, render
from petpark.components.serving_pusher import executor as serving_pusher

PUSHED_MODEL_KEY, EVALUATION_KEY, BLESSING_KEY = 'pushed_model', 'evaluation', 'model_blessing'
EXAMPLES_KEY, STATISTICS_KEY, SCHEMA_KEY = 'examples', 'statistics', 'schema'
HYPERPARAMETERS_KEY, INFRA_BLESSING_KEY, ONNX_MODEL_KEY = 'hyperparameters', 'infra_blessing', 'onnx_model'
MODEL_CARD_KEY = 'model_card'


def _proto(input_dict: Dict[str, List[artifact.Artifact]], key: str):
    found = input_dict.get(key) or []
    return found[0].mlmd_artifact if found else None


class Executor(base_executor.BaseExecutor):
    """See component.ModelCardGenerator."""

    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        card = artifact_utils.get_single_instance(output_dict[MODEL_CARD_KEY])
        pushed = _proto(input_dict, PUSHED_MODEL_KEY)
        if not facts.prop(pushed, 'pushed', 0):
            card.set_int_custom_property('written', 0)
            logging.info('ModelCardGenerator: nothing was pushed; no card.')
            return
        gathered = facts.gather(
            model_name=exec_properties['model_name'], pushed=pushed, evaluation=_proto(input_dict, EVALUATION_KEY),
            blessing=_proto(input_dict, BLESSING_KEY), examples=_proto(input_dict, EXAMPLES_KEY),
            statistics=_proto(input_dict, STATISTICS_KEY), schema=_proto(input_dict, SCHEMA_KEY),
            hyperparameters_artifact=_proto(input_dict, HYPERPARAMETERS_KEY),
            infra_blessing=_proto(input_dict, INFRA_BLESSING_KEY), onnx_model=_proto(input_dict, ONNX_MODEL_KEY),
            code_version=exec_properties['code_version'], class_id=int(exec_properties['positive_class_id']))
        render.write(gathered, card.uri)
        destination = os.path.join(exec_properties['card_base_directory'], gathered['version'])
        if fileio.exists(os.path.join(destination, render.CARD_MD)):
            logging.info('ModelCardGenerator: version %s already has its card in %s.', gathered['version'], destination)
        else:
            serving_pusher.remove_leftovers(exec_properties['card_base_directory'], render.CARD_MD)
            serving_pusher.publish_atomically(card.uri, destination, render.CARD_MD)
        card.set_int_custom_property('written', 1)
        card.set_string_custom_property('model_version', gathered['version'])
        card.set_string_custom_property('card_destination', destination)
        card.set_string_custom_property('code_version', exec_properties['code_version'])
