"""Every setting in one place: environment variables (PETPARK_*), overridable by CLI flags.

`Settings.from_env()` reads the environment; `petpark run` flags pass overrides. The
`tfx` CLI path (pipeline/local_runner.py) reads the environment only.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    help: str


# name -> (environment variable, default, description). README's settings table mirrors this.
SETTINGS: Dict[str, Setting] = {
    'home': Setting('PETPARK_HOME', 'petpark_home',
                    'Pipeline root, MLMD sqlite and serving push directory live below it.'),
    'data_root': Setting('PETPARK_DATA_ROOT', '',
                         'Input images. Empty: the synthetic default dataset under <home>/data/synthetic, '
                         'generated on first run.'),
    'input_pattern': Setting('PETPARK_INPUT_PATTERN', '*/*',
                             'Glob under data_root; `{SPAN}` selects spans, e.g. span-{SPAN}/*/*.'),
    'pipeline_name': Setting('PETPARK_PIPELINE_NAME', 'petpark', 'TFX pipeline name.'),
    'model_name': Setting('PETPARK_MODEL_NAME', 'petpark', 'Served model name: <home>/serving/<model_name>/.'),
    'train_fraction': Setting('PETPARK_TRAIN_FRACTION', 0.8, 'Share of images hashed into the train split.'),
    'max_bad_fraction': Setting('PETPARK_MAX_BAD_FRACTION', 0.1,
                                'Fail ingestion when more than this share of files is unusable.'),
    'synthetic_count': Setting('PETPARK_SYNTHETIC_COUNT', 600, 'Images in the generated default dataset.'),
    'seed': Setting('PETPARK_SEED', 0, 'Seed for data generation, tuning and training.'),
    'image_size': Setting('PETPARK_IMAGE_SIZE', 64, 'Model input size in pixels (Transform resizes to it).'),
    'backbone': Setting('PETPARK_BACKBONE', 'cnn', "'cnn' (from scratch) or 'mobilenet' (transfer learning)."),
    'backbone_weights': Setting('PETPARK_BACKBONE_WEIGHTS', '',
                                "MobileNet weights: a local .h5 path, 'imagenet' (downloads) or empty (random)."),
    'tune': Setting('PETPARK_TUNE', True, 'Run the KerasTuner search; false trains with fixed hyperparameters.'),
    'search_space': Setting('PETPARK_SEARCH_SPACE', '',
                            'JSON {name: [values]} over the default search space; with tuning off, '
                            'the first values are the fixed hyperparameters.'),
    'tuner_algorithm': Setting('PETPARK_TUNER_ALGORITHM', 'random', "'random', 'bayesian' or 'hyperband'."),
    'tuner_trials': Setting('PETPARK_TUNER_TRIALS', 2, 'Tuner trials (random/bayesian).'),
    'tuner_epochs': Setting('PETPARK_TUNER_EPOCHS', 2, 'Epochs per tuner trial.'),
    'tuner_steps': Setting('PETPARK_TUNER_STEPS', 30, 'Training steps per tuner trial.'),
    'train_epochs': Setting('PETPARK_TRAIN_EPOCHS', 10, 'Trainer epochs.'),
    'train_steps': Setting('PETPARK_TRAIN_STEPS', 400, 'Trainer steps in total (spread over the epochs).'),
    'eval_steps': Setting('PETPARK_EVAL_STEPS', 5, 'Validation batches per epoch.'),
    'batch_size': Setting('PETPARK_BATCH_SIZE', 32, 'Batch size for tuning and training.'),
    'min_accuracy': Setting('PETPARK_MIN_ACCURACY', 0.7,
                            'Blessing: lowest binary accuracy on the overall eval slice.'),
    'max_accuracy_drop': Setting('PETPARK_MAX_ACCURACY_DROP', 0.02,
                                 'Blessing: largest accuracy drop allowed against the latest blessed model.'),
    'enable_cache': Setting('PETPARK_ENABLE_CACHE', True, 'Reuse outputs of unchanged components.'),
    'beam_workers': Setting('PETPARK_BEAM_WORKERS', 1,
                            'Beam DirectRunner workers; above 1 uses multi_processing (for large data).'),
}


def _parse(name: str, raw: Any) -> Any:
    default = SETTINGS[name].default
    if raw is None:
        return default
    text = str(raw).strip()
    try:
        if isinstance(default, bool):
            if text.lower() in ('1', 'true', 'yes', 'on'):
                return True
            if text.lower() in ('0', 'false', 'no', 'off'):
                return False
            raise ValueError('expected true/false')
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as e:
        raise ValueError(f'{SETTINGS[name].env}={text!r}: {e}') from None
    return text


@dataclasses.dataclass(frozen=True)
class Settings:
    home: str
    data_root: str
    input_pattern: str
    pipeline_name: str
    model_name: str
    train_fraction: float
    max_bad_fraction: float
    synthetic_count: int
    seed: int
    image_size: int
    backbone: str
    backbone_weights: str
    tune: bool
    search_space: str
    tuner_algorithm: str
    tuner_trials: int
    tuner_epochs: int
    tuner_steps: int
    train_epochs: int
    train_steps: int
    eval_steps: int
    batch_size: int
    min_accuracy: float
    max_accuracy_drop: float
    enable_cache: bool
    beam_workers: int

    @classmethod
    def from_env(cls, overrides: Optional[Mapping[str, Any]] = None,
                 environ: Optional[Mapping[str, str]] = None) -> 'Settings':
        """Environment values, then non-None `overrides`; paths made absolute."""
        environ = os.environ if environ is None else environ
        values = {name: _parse(name, environ.get(s.env)) for name, s in SETTINGS.items()}
        for name, value in (overrides or {}).items():
            if name not in SETTINGS:
                raise ValueError(f'Unknown setting {name!r}')
            if value is not None:
                values[name] = _parse(name, value)
        values['home'] = os.path.abspath(os.path.expanduser(values['home']))
        if values['data_root']:
            values['data_root'] = os.path.abspath(os.path.expanduser(values['data_root']))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.backbone not in ('cnn', 'mobilenet'):
            raise ValueError(f"PETPARK_BACKBONE must be 'cnn' or 'mobilenet', got {self.backbone!r}")
        if self.data_root and not os.path.isdir(self.data_root):
            raise ValueError(f'PETPARK_DATA_ROOT: {self.data_root!r} is not a directory')
        weights = self.backbone_weights
        if weights and weights != 'imagenet' and not os.path.isfile(weights):
            raise ValueError(f'PETPARK_BACKBONE_WEIGHTS: no such file {weights!r}')
        self.search_space_values()
        if self.tuner_algorithm not in ('random', 'bayesian', 'hyperband'):
            raise ValueError(f"PETPARK_TUNER_ALGORITHM must be random, bayesian or hyperband, "
                             f"got {self.tuner_algorithm!r}")
        for name in ('tuner_trials', 'tuner_epochs', 'tuner_steps', 'train_epochs', 'train_steps',
                     'eval_steps', 'batch_size', 'beam_workers', 'image_size', 'synthetic_count'):
            if getattr(self, name) < 1:
                raise ValueError(f'{SETTINGS[name].env} must be at least 1, got {getattr(self, name)}')

    def search_space_values(self) -> Dict[str, List[Any]]:
        """PETPARK_SEARCH_SPACE parsed: {hyperparameter: [values]} (names are checked by the model)."""
        if not self.search_space:
            return {}
        try:
            space = json.loads(self.search_space)
        except json.JSONDecodeError as e:
            raise ValueError(f'PETPARK_SEARCH_SPACE is not valid JSON: {e}') from None
        if not isinstance(space, dict) or not all(isinstance(v, list) and v for v in space.values()):
            raise ValueError('PETPARK_SEARCH_SPACE must be a JSON object of non-empty lists, '
                             f'e.g. {{"filters": [16, 32]}}; got {self.search_space!r}')
        return space

    @property
    def input_base(self) -> str:
        return self.data_root or self.synthetic_data_root

    @property
    def synthetic_data_root(self) -> str:
        return os.path.join(self.home, 'data', 'synthetic')

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.home, 'pipeline_root', self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.home, 'metadata.sqlite')

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.home, 'serving', self.model_name)

    def model_config(self) -> Dict[str, Any]:
        """custom_config shared by Transform, Tuner and Trainer."""
        return {'image_size': self.image_size, 'backbone': self.backbone,
                'backbone_weights': self.backbone_weights or None, 'batch_size': self.batch_size,
                'seed': self.seed}
