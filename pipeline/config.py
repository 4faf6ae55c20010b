"""Every setting in one place: environment variables (PETPARK_*), overridable by CLI flags.

`Settings.from_env()` reads the environment; `petpark run` flags pass overrides. The
`tfx` CLI path (pipeline/local_runner.py) reads the environment only. The model/training
part of the settings becomes the one typed TrainingConfig (modules/training_config.py),
validated here, before any component runs.
"""
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
from typing import Any, Dict, List, Mapping, Optional

from petpark.modules import training_config

VALIDATION_SERVERS = ('petpark', 'tensorflow_model_server', 'docker')  # components/serving_validator/runners.py
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    help: str


# name -> (environment variable, default, description). README's settings table mirrors this.
SETTINGS: Dict[str, Setting] = {
    'profile': Setting('PETPARK_PROFILE', 'demo',
                       "Named defaults for the settings below: 'demo' (synthetic frames) or 'real' (the Kaggle "
                       'photos; see README). Environment variables and flags override them.'),
    'home': Setting('PETPARK_HOME', 'petpark_home',
                    'Pipeline root, MLMD sqlite and serving push directory live below it.'),
    'data_root': Setting('PETPARK_DATA_ROOT', '',
                         'Input images. Empty: the synthetic default dataset under <home>/data/synthetic, '
                         'generated on first run.'),
    'input_pattern': Setting('PETPARK_INPUT_PATTERN', '*/*',
                             'Glob under data_root; `{SPAN}` selects spans, e.g. span-{SPAN}/*/*. Several '
                             'globs separated by commas are pooled (each below a folder of its own).'),
    'holdout_pattern': Setting('PETPARK_HOLDOUT_PATTERN', '',
                               'Glob under data_root whose images form the `validation` split: never tuned or '
                               'trained on; the Evaluator reports and blesses on it. Empty: the eval split.'),
    'pipeline_name': Setting('PETPARK_PIPELINE_NAME', 'petpark', 'TFX pipeline name.'),
    'model_name': Setting('PETPARK_MODEL_NAME', 'petpark', 'Served model name: <home>/serving/<model_name>/.'),
    'train_fraction': Setting('PETPARK_TRAIN_FRACTION', 0.8, 'Share of images hashed into the train split.'),
    'max_bad_fraction': Setting('PETPARK_MAX_BAD_FRACTION', 0.1,
                                'Fail ingestion when more than this share of files is unusable.'),
    'max_file_bytes': Setting('PETPARK_MAX_FILE_BYTES', 64 * 1024 * 1024,
                              'Ingestion rejects larger files (too_large) without reading them whole.'),
    'allow_symlinks_outside_root': Setting('PETPARK_ALLOW_SYMLINKS_OUTSIDE_ROOT', False,
                                           'Ingestion follows symbolic links that leave the data root.'),
    'synthetic_count': Setting('PETPARK_SYNTHETIC_COUNT', 600, 'Images in the generated default dataset.'),
    'seed': Setting('PETPARK_SEED', 0, 'Seed for data generation, tuning and training.'),
    'image_size': Setting('PETPARK_IMAGE_SIZE', 64, 'Model input size in pixels (Transform resizes to it).'),
    'backbone': Setting('PETPARK_BACKBONE', 'cnn',
                        "'cnn' (from scratch) or a frozen ImageNet backbone: mobilenet_v1_0.25 ('mobilenet'), "
                        'mobilenet_v2_0.5, mobilenet_v1_1.0.'),
    'backbone_weights': Setting('PETPARK_BACKBONE_WEIGHTS', '',
                                "The backbone's local Keras no_top .h5, required and checked against its sha256 "
                                "before anything runs ('imagenet' downloads)."),
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
    'fine_tune_epochs': Setting('PETPARK_FINE_TUNE_EPOCHS', 0,
                                'After training with the backbone frozen, epochs with its top layers unfrozen '
                                '(0: none; pretrained backbones only).'),
    'fine_tune_steps': Setting('PETPARK_FINE_TUNE_STEPS', 200, 'Fine-tuning steps in total.'),
    'fine_tune_layers': Setting('PETPARK_FINE_TUNE_LAYERS', 12,
                                "Backbone layers unfrozen, counted from its top (BatchNorm's statistics stay "
                                'frozen).'),
    'fine_tune_learning_rate': Setting('PETPARK_FINE_TUNE_LEARNING_RATE', 1e-4,
                                       'Starting learning rate of fine-tuning (cosine decay to zero).'),
    'eval_steps': Setting('PETPARK_EVAL_STEPS', 5, 'Validation batches per epoch.'),
    'batch_size': Setting('PETPARK_BATCH_SIZE', 32, 'Batch size for tuning and training.'),
    'min_accuracy': Setting('PETPARK_MIN_ACCURACY', 0.7,
                            'Blessing: lowest binary accuracy on the overall eval slice.'),
    'min_class_precision': Setting('PETPARK_MIN_CLASS_PRECISION', 0.0,
                                   'Blessing: lowest precision of each class (cat and dog each as the positive '
                                   'class) on the overall slice; 0: not checked.'),
    'min_class_recall': Setting('PETPARK_MIN_CLASS_RECALL', 0.0,
                                'Blessing: lowest recall of each class on the overall slice; 0: not checked.'),
    'max_accuracy_drop': Setting('PETPARK_MAX_ACCURACY_DROP', 0.02,
                                 'Blessing: largest accuracy drop allowed against the latest blessed model.'),
    'validate_serving': Setting('PETPARK_VALIDATE_SERVING', True,
                                'Start each candidate in a real model server and query it over gRPC before '
                                'the push (ServingValidator); false skips this for quick local runs.'),
    'validation_server': Setting('PETPARK_VALIDATION_SERVER', 'petpark',
                                 "Server of that check: 'petpark' (petpark serve), 'tensorflow_model_server' "
                                 "or 'docker' (the tensorflow/serving image)."),
    'validation_server_binary': Setting('PETPARK_VALIDATION_SERVER_BINARY', '',
                                        'tensorflow_model_server path (default: on PATH), or the docker image tag '
                                        '(default: latest).'),
    'validation_max_latency_ms': Setting('PETPARK_VALIDATION_MAX_LATENCY_MS', 1000.0,
                                         'Serving check: highest p99 latency of one gRPC request.'),
    'export_onnx': Setting('PETPARK_EXPORT_ONNX', True,
                           'Export each blessed model to ONNX for the edge boxes (<home>/edge/<model_name>/).'),
    'onnx_opset': Setting('PETPARK_ONNX_OPSET', 17, 'ONNX opset of the edge export.'),
    'onnx_int8': Setting('PETPARK_ONNX_INT8', True,
                         'Also ship an INT8 model when its eval accuracy is within 1 point of FP32.'),
    'enable_cache': Setting('PETPARK_ENABLE_CACHE', True, 'Reuse outputs of unchanged components.'),
    'beam_args': Setting('PETPARK_BEAM_ARGS', '',
                         'Beam pipeline args for every Beam-powered component, as on a command line '
                         '(Dataflow, Flink, Spark: see README). Empty: the local FnApiRunner, PETPARK_BEAM_WORKERS.'),
    'beam_workers': Setting('PETPARK_BEAM_WORKERS', 1,
                            'Beam DirectRunner workers; above 1 uses multi_processing (for large data).'),
    'airflow_schedule': Setting('PETPARK_AIRFLOW_SCHEDULE', '@daily',
                                'Airflow DAG schedule (cron or preset; none: triggered runs only); each run '
                                'ingests the latest span.'),
    'airflow_start_date': Setting('PETPARK_AIRFLOW_START_DATE', '2026-01-01',
                                  'Airflow DAG start date (YYYY-MM-DD, UTC); catch-up is off.'),
    'airflow_retries': Setting('PETPARK_AIRFLOW_RETRIES', 2, 'Retries of a failed Airflow task.'),
    'airflow_retry_delay_s': Setting('PETPARK_AIRFLOW_RETRY_DELAY_S', 300,
                                     'First retry delay in seconds; it doubles on each retry (at most 1 hour).'),
    'airflow_web_port': Setting('PETPARK_AIRFLOW_WEB_PORT', 8080,
                                '`petpark airflow up`: the webserver port on 127.0.0.1.'),
    'airflow_db_port': Setting('PETPARK_AIRFLOW_DB_PORT', 0,
                               '`petpark airflow up`: PostgreSQL port on 127.0.0.1; 0 picks a free one '
                               'on the first start and keeps it.'),
    'airflow_postgres_bin': Setting('PETPARK_AIRFLOW_POSTGRES_BIN', '',
                                    "Folder with PostgreSQL's initdb/pg_ctl/postgres; empty: the pgserver "
                                    'package\'s bundled PostgreSQL.'),
}


SHARED_ROOT = os.path.join(os.path.dirname(REPO_ROOT), 'shared')
_REAL_BACKBONE = 'mobilenet_v1_1.0'
# Named defaults. 'real': the production model on real photos: train/ and the 128 px set pooled and
# hash-split into train/eval (duplicates kept together), validation/ held out for the Evaluator.
PROFILES: Dict[str, Dict[str, Any]] = {
    'demo': {},
    'real': {
        'home': 'petpark_home_real',
        'data_root': os.path.join(SHARED_ROOT, 'data'),
        'input_pattern': 'cats_and_dogs_filtered/train/*/*,kaggle_dogs_vs_cats_128/*/*',
        'holdout_pattern': 'cats_and_dogs_filtered/validation/*/*',
        'train_fraction': 0.9,
        'image_size': 160,
        'backbone': _REAL_BACKBONE,
        'backbone_weights': os.path.join(SHARED_ROOT, 'models',
                                         training_config.PRETRAINED[_REAL_BACKBONE].file_name),
        'search_space': json.dumps({'learning_rate': [1e-3, 3e-3, 3e-4], 'dropout': [0.3, 0.5],
                                    'dense_units': [256, 128], 'augmentation': [0.1, 0.0]}),
        'tuner_trials': 3,
        'tuner_epochs': 1,
        'tuner_steps': 60,
        'batch_size': 64,
        'train_epochs': 2,
        'train_steps': 700,
        'fine_tune_epochs': 2,
        'fine_tune_steps': 500,
        'fine_tune_layers': 12,
        'fine_tune_learning_rate': 1e-4,
        'eval_steps': 36,
        'min_accuracy': 0.98,
        'min_class_precision': 0.97,
        'min_class_recall': 0.97,
        'max_accuracy_drop': 0.005,
        'beam_workers': 2,
    },
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
    profile: str
    home: str
    data_root: str
    input_pattern: str
    holdout_pattern: str
    pipeline_name: str
    model_name: str
    train_fraction: float
    max_bad_fraction: float
    max_file_bytes: int
    allow_symlinks_outside_root: bool
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
    fine_tune_epochs: int
    fine_tune_steps: int
    fine_tune_layers: int
    fine_tune_learning_rate: float
    eval_steps: int
    batch_size: int
    min_accuracy: float
    min_class_precision: float
    min_class_recall: float
    max_accuracy_drop: float
    validate_serving: bool
    validation_server: str
    validation_server_binary: str
    validation_max_latency_ms: float
    export_onnx: bool
    onnx_opset: int
    onnx_int8: bool
    enable_cache: bool
    beam_args: str
    beam_workers: int
    airflow_schedule: str
    airflow_start_date: str
    airflow_retries: int
    airflow_retry_delay_s: int
    airflow_web_port: int
    airflow_db_port: int
    airflow_postgres_bin: str

    @classmethod
    def from_env(cls, overrides: Optional[Mapping[str, Any]] = None,
                 environ: Optional[Mapping[str, str]] = None, check_data_root: bool = True) -> 'Settings':
        """The profile's defaults, then environment values, then non-None `overrides`; local paths made absolute.

        `check_data_root=False` leaves a missing data folder to the ImageExampleGen run (a scheduled
        DAG must still parse, and its run fail with the component's error)."""
        environ = os.environ if environ is None else environ
        profile = (overrides or {}).get('profile') or environ.get(SETTINGS['profile'].env) or 'demo'
        if profile not in PROFILES:
            raise ValueError(f'Unknown profile {profile!r}: one of {", ".join(PROFILES)} (--profile / PETPARK_PROFILE)')
        values = {name: _parse(name, environ.get(s.env, PROFILES[profile].get(name))) for name, s in SETTINGS.items()}
        values['profile'] = profile
        for name, value in (overrides or {}).items():
            if name not in SETTINGS:
                raise ValueError(f'Unknown setting {name!r}')
            if value is not None:
                values[name] = _parse(name, value)
        for name in ('home', 'data_root', 'backbone_weights'):
            if values[name] != 'imagenet':
                values[name] = absolute(values[name])
        settings = cls(**values)
        settings.validate(check_data_root)
        return settings

    def validate(self, check_data_root: bool = True) -> None:
        if check_data_root and self.data_root and is_local(self.data_root) and not os.path.isdir(self.data_root):
            raise ValueError(f'PETPARK_DATA_ROOT: {self.data_root!r} is not a directory')
        for name in ('tuner_steps', 'train_steps', 'eval_steps', 'beam_workers', 'synthetic_count', 'max_file_bytes',
                     'airflow_retry_delay_s'):
            if getattr(self, name) < 1:
                raise ValueError(f'{SETTINGS[name].env} must be at least 1, got {getattr(self, name)}')
        if self.validation_server not in VALIDATION_SERVERS:
            raise ValueError(f'PETPARK_VALIDATION_SERVER must be one of {VALIDATION_SERVERS}, '
                             f'got {self.validation_server!r}')
        for name in ('min_accuracy', 'min_class_precision', 'min_class_recall', 'max_accuracy_drop'):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f'{SETTINGS[name].env} must be between 0 and 1, got {getattr(self, name)}')
        if self.validation_max_latency_ms <= 0:
            raise ValueError(f'PETPARK_VALIDATION_MAX_LATENCY_MS must be positive, got {self.validation_max_latency_ms}')
        if self.airflow_retries < 0:
            raise ValueError(f'PETPARK_AIRFLOW_RETRIES must be 0 or more, got {self.airflow_retries}')
        for name in ('airflow_web_port', 'airflow_db_port'):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f'{SETTINGS[name].env} must be a port number, got {getattr(self, name)}')
        self.airflow_start()
        self.beam_arg_list()
        self.training_config()

    def airflow_start(self) -> datetime.datetime:
        """PETPARK_AIRFLOW_START_DATE as a UTC datetime."""
        try:
            day = datetime.date.fromisoformat(self.airflow_start_date)
        except ValueError:
            raise ValueError(f'PETPARK_AIRFLOW_START_DATE must be YYYY-MM-DD, got {self.airflow_start_date!r}') from None
        return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)

    def beam_arg_list(self) -> List[str]:
        """PETPARK_BEAM_ARGS split as a shell would; each must be a --flag."""
        try:
            args = shlex.split(self.beam_args)
        except ValueError as e:
            raise ValueError(f'PETPARK_BEAM_ARGS: {e}') from None
        bad = [arg for arg in args if not arg.startswith('--')]
        if bad:
            raise ValueError(f'PETPARK_BEAM_ARGS: every argument must be a --flag=value, got {bad[0]!r}')
        return args

    def search_space_values(self) -> Dict[str, List[Any]]:
        """PETPARK_SEARCH_SPACE parsed: {hyperparameter: [values]} (checked by the TrainingConfig)."""
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

    def training_config(self) -> training_config.TrainingConfig:
        """The validated model/training config; a bad value names its PETPARK_* variable."""
        config = training_config.TrainingConfig(
            preprocessing=training_config.PreprocessingConfig(image_size=self.image_size),
            model=training_config.ModelConfig(
                backbone=self.backbone, backbone_weights=self.backbone_weights or None,
                search_space=training_config.search_space_with(self.search_space_values())),
            tuning=training_config.TuningConfig(epochs=self.tuner_epochs, batch_size=self.batch_size,
                                                seed=self.seed, algorithm=self.tuner_algorithm,
                                                max_trials=self.tuner_trials),
            training=training_config.FitConfig(epochs=self.train_epochs, batch_size=self.batch_size, seed=self.seed),
            fine_tuning=training_config.FineTuneConfig(
                epochs=self.fine_tune_epochs, steps=self.fine_tune_steps, layers=self.fine_tune_layers,
                learning_rate=self.fine_tune_learning_rate))
        try:
            return config.validate()
        except training_config.ConfigError as e:
            raise ValueError(f'{SETTINGS[_CONFIG_SETTINGS[e.field]].env} {e.problem}') from None

    @property
    def input_patterns(self) -> List[str]:
        """PETPARK_INPUT_PATTERN's comma-separated globs."""
        return [pattern.strip() for pattern in self.input_pattern.split(',') if pattern.strip()]

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

    @property
    def edge_model_dir(self) -> str:
        return os.path.join(self.home, 'edge', self.model_name)

    @property
    def model_card_dir(self) -> str:
        return os.path.join(self.home, 'model_cards', self.model_name)

    @property
    def airflow_home(self) -> str:
        """AIRFLOW_HOME of `petpark airflow up`: airflow.cfg, dags/, logs/, postgres/."""
        return os.path.join(self.home, 'airflow')

    @property
    def models_config_path(self) -> str:
        """The models.config `petpark promote` writes and `petpark models` reads labels from."""
        return os.path.join(os.path.dirname(self.serving_model_dir), 'models.config')


# TrainingConfig field -> the setting it comes from, for error messages.
_CONFIG_SETTINGS = {
    'preprocessing.image_size': 'image_size', 'model.backbone': 'backbone',
    'model.backbone_weights': 'backbone_weights', 'model.search_space': 'search_space',
    'tuning.algorithm': 'tuner_algorithm', 'tuning.max_trials': 'tuner_trials', 'tuning.epochs': 'tuner_epochs',
    'tuning.batch_size': 'batch_size', 'tuning.seed': 'seed', 'training.epochs': 'train_epochs',
    'training.batch_size': 'batch_size', 'training.seed': 'seed', 'fine_tuning.epochs': 'fine_tune_epochs',
    'fine_tuning.steps': 'fine_tune_steps', 'fine_tuning.layers': 'fine_tune_layers',
    'fine_tuning.learning_rate': 'fine_tune_learning_rate',
}


def code_version() -> str:
    """The git commit of this checkout (`+dirty` with uncommitted changes), else the package version."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return f"git {commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        from importlib import metadata
        try:
            return f"petpark {metadata.version('petpark')}"
        except metadata.PackageNotFoundError:
            return 'unknown'


def is_local(path: str) -> bool:
    """False for URIs such as gs://bucket/dir or s3://bucket/dir."""
    return '://' not in path


def absolute(path: str) -> str:
    """A local path made absolute (~ expanded); URIs and '' unchanged."""
    return os.path.abspath(os.path.expanduser(path)) if path and is_local(path) else path
