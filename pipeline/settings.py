"""Every setting, declared once: name, environment variable, type, default, bounds, help and group.

A group is a frozen dataclass whose fields are its settings; `setting(...)` holds the rest of a
declaration. `Settings` has the pipeline's own settings as fields and one field per group
(`settings.training.image_size`, `settings.airflow.schedule`). Everything else is derived from
the declarations: the environment variable (PETPARK_ + the name in upper case), parsing,
validation, `petpark run --set` help, `petpark settings` and docs/settings.md (a test fails when
that page and the declarations differ). A group of settings for a new concern is a new dataclass
and one field of `Settings`.

The profile's defaults come first, then PETPARK_* environment variables, then CLI overrides.
The model/training settings become the one typed TrainingConfig (modules/training_config.py),
validated here, before any component runs; an error names the PETPARK_* variable it came from.
"""
import dataclasses
import datetime
import difflib
import json
import os
import re
import shlex
import subprocess
import urllib.parse
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from petpark.components.common import uris
from petpark.components.serving_validator.servers import SERVERS as VALIDATION_SERVERS
from petpark.modules import training_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_ROOT = os.path.join(os.path.dirname(REPO_ROOT), 'shared')
ENV_PREFIX = 'PETPARK_'
PIPELINE_GROUP_DOC = 'The pipeline itself: its name, home, served model name, seed and cache.'
_DECLARATION = 'petpark.setting'
# A name that becomes a folder: one path component, no '..', nothing a shell or URL would mangle.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$')
# PETPARK_* variables that are not settings (read by scripts, tests or deployment files).
OTHER_VARIABLES = {
    'PETPARK_PYTHON': 'scripts/bootstrap.sh: the Python 3.10 interpreter to build the environments with',
    'PETPARK_REQUIRE_AIRFLOW': 'tests: fail instead of skipping when .venv-airflow is missing (`make test` sets it)',
    'PETPARK_REQUIRE_SHARED': 'tests: fail when ../shared is present but a test that needs it skipped (CI)',
    'PETPARK_REQUIRE_SYSTEM_PACKAGES': 'tests: fail instead of skipping when prometheus, prometheus-alertmanager or '
                                       'chromium is missing (`make test` sets it)',
    'PETPARK_SERVING_DIR': 'serving/deploy/docker-compose.yml: the push directory the container serves',
}


class UnknownSettingWarning(UserWarning):
    """A PETPARK_* environment variable that names no setting (a typo, usually)."""


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What a dataclass field does not say about a setting."""
    help: str
    low: Optional[float] = None  # inclusive bounds of a number
    high: Optional[float] = None
    above: Optional[float] = None  # exclusive lower bound
    choices: Tuple[str, ...] = ()
    kind: str = ''  # 'path': made absolute; 'name': becomes a folder name; 'url': shown with its password masked
    # TrainingConfig fields ('section.field') this setting fills, and how its value converts
    config: Tuple[str, ...] = ()
    to_config: Optional[Callable[[Any], Any]] = None


def setting(default: Any, help: str, **declaration) -> Any:
    """A dataclass field declaring one setting (see Declaration for the keywords)."""
    if isinstance(declaration.get('config'), str):
        declaration['config'] = (declaration['config'],)
    return dataclasses.field(default=default, metadata={_DECLARATION: Declaration(help, **declaration)})


def _search_space(text: str) -> Dict[str, List[Any]]:
    """PETPARK_SEARCH_SPACE parsed and laid over the default search space (checked by TrainingConfig)."""
    if not text:
        return training_config.search_space_with(None)
    try:
        space = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f'is not valid JSON: {e}') from None
    if not isinstance(space, dict) or not all(isinstance(v, list) and v for v in space.values()):
        raise ValueError(f'must be a JSON object of non-empty lists, e.g. {{"filters": [16, 32]}}; got {text!r}')
    return training_config.search_space_with(space)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the photos come from, how they are read and split."""
    data_root: str = setting('', 'Input images. Empty: the synthetic default dataset under `<home>/data/synthetic`, '
                                 'generated on first run.', kind='path')
    input_pattern: str = setting('*/*', 'Glob under the data root; `{SPAN}` selects spans, e.g. `span-{SPAN}/*/*`. '
                                        'Several globs separated by commas are pooled (each below a folder of its '
                                        'own, which prefixes its image ids).')
    holdout_pattern: str = setting('', 'Glob under the data root whose images form the `validation` split: never '
                                       'tuned or trained on (nor any duplicate of them); the Evaluator reports and '
                                       'blesses on it. Empty: the Evaluator uses the eval split.')
    train_fraction: float = setting(0.8, 'Share of images hashed into the train split.', low=0.01, high=0.99)
    max_bad_fraction: float = setting(0.1, 'Fail ingestion when more than this share of files is unusable.',
                                      low=0.0, high=1.0)
    max_file_bytes: int = setting(64 * 1024 * 1024, 'Ingestion rejects larger files (`too_large`) without reading '
                                                    'them whole.', low=1)
    allow_symlinks_outside_root: bool = setting(False, 'Ingestion follows symbolic links that leave the data root.')
    synthetic_count: int = setting(600, 'Images in the generated default dataset.', low=2)

    @property
    def input_patterns(self) -> List[str]:
        """PETPARK_INPUT_PATTERN's comma-separated globs."""
        return [pattern.strip() for pattern in self.input_pattern.split(',') if pattern.strip()]


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """The model, its tuning and its training (the TrainingConfig's sources)."""
    image_size: int = setting(64, 'Model input size in pixels (Transform resizes to it).',
                              config='preprocessing.image_size')
    backbone: str = setting('cnn', '`cnn` (from scratch) or a frozen ImageNet backbone: `mobilenet_v1_0.25` '
                                   '(`mobilenet`), `mobilenet_v2_0.5`, `mobilenet_v1_1.0`.', config='model.backbone')
    backbone_weights: str = setting('', "The backbone's local Keras no_top `.h5`, required and checked against its "
                                        'sha256 before anything runs (`imagenet` downloads).', kind='path',
                                    config='model.backbone_weights', to_config=lambda path: path or None)
    tune: bool = setting(True, 'Run the KerasTuner search; false trains with fixed hyperparameters.')
    search_space: str = setting('', 'JSON `{name: [values]}` over the default search space, e.g. '
                                    '`{"filters": [16, 32]}`; with tuning off, the first values are the fixed '
                                    'hyperparameters.', config='model.search_space', to_config=_search_space)
    tuner_algorithm: str = setting('random', '`random`, `bayesian` or `hyperband`.', config='tuning.algorithm')
    tuner_trials: int = setting(2, 'Tuner trials (random/bayesian).', config='tuning.max_trials')
    tuner_epochs: int = setting(2, 'Epochs per tuner trial.', config='tuning.epochs')
    tuner_steps: int = setting(30, 'Training steps per tuner trial.', low=1)
    train_epochs: int = setting(10, 'Trainer epochs.', config='training.epochs')
    train_steps: int = setting(400, 'Trainer steps in total (spread over the epochs).', low=1)
    fine_tune_epochs: int = setting(0, 'After training with the backbone frozen, epochs with its top layers '
                                       'unfrozen (0: none; pretrained backbones only).', config='fine_tuning.epochs')
    fine_tune_steps: int = setting(200, 'Fine-tuning steps in total.', config='fine_tuning.steps')
    fine_tune_layers: int = setting(12, "Backbone layers unfrozen, counted from its top (BatchNorm's statistics "
                                        'stay frozen).', config='fine_tuning.layers')
    fine_tune_learning_rate: float = setting(1e-4, 'Starting learning rate of fine-tuning (cosine decay to zero).',
                                             config='fine_tuning.learning_rate')
    eval_steps: int = setting(5, 'Validation batches per epoch.', low=1)
    batch_size: int = setting(32, 'Batch size for tuning and training.',
                              config=('tuning.batch_size', 'training.batch_size'))


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """When the Evaluator blesses a model (on the overall slice)."""
    min_accuracy: float = setting(0.7, 'Blessing: lowest binary accuracy on the overall eval slice.', low=0.0, high=1.0)
    min_class_precision: float = setting(0.0, 'Blessing: lowest precision of each class (cat and dog each as the '
                                              'positive class) on the overall slice; 0: not checked.',
                                         low=0.0, high=1.0)
    min_class_recall: float = setting(0.0, 'Blessing: lowest recall of each class on the overall slice; 0: not '
                                           'checked.', low=0.0, high=1.0)
    max_accuracy_drop: float = setting(0.02, 'Blessing: largest accuracy drop allowed against the latest blessed '
                                             'model.', low=0.0, high=1.0)


@dataclasses.dataclass(frozen=True)
class ServingCheckSettings:
    """The test box: the candidate in a real model server before the push."""
    validate_serving: bool = setting(True, 'Start each candidate in a real model server and query it over gRPC '
                                           'before the push (ServingValidator); false skips this for quick local runs.')
    validation_server: str = setting('petpark', 'Server of that check: `petpark` (petpark serve), '
                                                '`tensorflow_model_server` or `docker` (the tensorflow/serving image).',
                                     choices=VALIDATION_SERVERS)
    validation_server_binary: str = setting('', '`tensorflow_model_server` path (default: on PATH), or the docker '
                                                'image tag (default: latest).')
    validation_max_latency_ms: float = setting(1000.0, 'Serving check: highest p99 latency of one gRPC request.',
                                               above=0)


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """The ONNX export for the edge boxes."""
    export_onnx: bool = setting(True, 'Export each blessed model to ONNX for the edge boxes '
                                      '(`<home>/edge/<model_name>/`).')
    onnx_opset: int = setting(17, 'ONNX opset of the edge export.', low=7, high=21)
    onnx_int8: bool = setting(True, 'Also ship an INT8 model when its eval accuracy is within 1 point of FP32.')


@dataclasses.dataclass(frozen=True)
class BeamSettings:
    """How the Beam-powered components run."""
    beam_args: str = setting('', 'Beam pipeline args for every Beam-powered component, as on a command line '
                                 '(Dataflow, Flink, Spark: see docs/operations.md). Empty: the local FnApiRunner '
                                 'with `PETPARK_BEAM_WORKERS`.')
    beam_workers: int = setting(1, 'Beam workers; above 1 uses multi-processing (for large data).', low=1, high=256)

    def arg_list(self) -> List[str]:
        """PETPARK_BEAM_ARGS split as a shell would; each must be a --flag."""
        try:
            args = shlex.split(self.beam_args)
        except ValueError as e:
            raise ValueError(f'PETPARK_BEAM_ARGS: {e}') from None
        bad = [arg for arg in args if not arg.startswith('--')]
        if bad:
            raise ValueError(f'PETPARK_BEAM_ARGS: every argument must be a --flag=value, got {bad[0]!r}')
        return args


@dataclasses.dataclass(frozen=True)
class AirflowSettings:
    """Deployment: the scheduled DAG and `petpark airflow up` (not the pipeline's own settings)."""
    PREFIX = 'airflow_'
    schedule: str = setting('@daily', 'Airflow DAG schedule (cron or preset; `none`: triggered runs only); each run '
                                      'ingests the latest span.')
    start_date: str = setting('2026-01-01', 'Airflow DAG start date (YYYY-MM-DD, UTC); catch-up is off.')
    retries: int = setting(2, 'Retries of a failed Airflow task.', low=0, high=100)
    retry_delay_s: int = setting(300, 'First retry delay in seconds; it doubles on each retry (at most 1 hour).',
                                 low=1)
    web_port: int = setting(8080, '`petpark airflow up`: the webserver port on 127.0.0.1.', low=0, high=65535)
    db_port: int = setting(0, '`petpark airflow up`: PostgreSQL port on 127.0.0.1; 0 picks a free one on the first '
                              'start and keeps it.', low=0, high=65535)
    postgres_bin: str = setting('', "Folder with PostgreSQL's initdb/pg_ctl/postgres; empty: the pgserver package's "
                                    'bundled PostgreSQL.', kind='path')

    def start(self) -> datetime.datetime:
        """PETPARK_AIRFLOW_START_DATE as a UTC datetime."""
        try:
            day = datetime.date.fromisoformat(self.start_date)
        except ValueError:
            raise ValueError(f'PETPARK_AIRFLOW_START_DATE must be YYYY-MM-DD, got {self.start_date!r}') from None
        return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class MonitoringSettings:
    """Watching served frames: request logs, each pushed version's baseline, `petpark monitor`."""
    PREFIX = 'monitor_'
    baseline: bool = setting(True, 'Record a monitoring baseline (MonitoringBaselineGen) for each pushed version: '
                                   'reference statistics and scores, calibrated thresholds.')
    false_alarm_rate: float = setting(0.01, 'Share of in-distribution windows allowed to alarm, all checks together; '
                                            'thresholds are calibrated to it.', above=0, high=0.5)
    min_window: int = setting(50, 'Fewest frames a window needs for a verdict (fewer: INCONCLUSIVE); thresholds are '
                                  'calibrated for 1, 2, 4, 10, 20, 40 and 100 times this.', low=10, high=100_000)
    windows_per_size: int = setting(40, 'In-distribution windows measured per window size when calibrating.',
                                    low=5, high=2000)
    log_dir: str = setting('', 'Where request logs are (TFRecord PredictionLogs of `petpark serve` and the edge '
                               'boxes). Empty: `<home>/request_logs`.', kind='path')
    prometheus_url: str = setting('', "Prometheus that scrapes the servers, for the window's request rate, error "
                                      'ratio and latency. Empty: not measured.')
    schedule: str = setting('*/15 * * * *', 'Airflow: the monitoring DAG `<pipeline_name>_monitor` checks each '
                                          'interval of this cron schedule (or preset) as one window; `none`: no '
                                          'monitoring DAG.')
    alertmanager_url: str = setting('', "Alertmanager the monitor posts breaches to (its /api/v2/alerts).")
    webhook_url: str = setting('', 'Where breaches are posted as JSON when there is no Alertmanager.')
    alert_cooldown_s: int = setting(3600, 'A check that breached is not alerted again within this many seconds.',
                                    low=0)
    review_dir: str = setting('', "On a breach, the window's frames are exported here for a person to label (the "
                                  "model's labels as suggestions). Empty: no export.", kind='path')
    retrain: str = setting('none', 'On a breach with a new labelled span: `airflow` (trigger the DAG through '
                                   "Airflow's REST API), `local` (run the pipeline here) or `none`.",
                           choices=('none', 'airflow', 'local'))

    canary_min_requests: int = setting(1000, '`petpark monitor canary`: a PASS needs at least this many mirrored '
                                             'requests (fewer: INCONCLUSIVE, unless a check already failed).',
                                       low=100, high=10_000_000)
    canary_max_flip_rate: float = setting(0.005, 'Share of decisions (predicted class) the canary may change from '
                                                 "stable's; significantly more: FAIL.", above=0, high=0.5)
    canary_max_score_shift: float = setting(0.1, 'Largest Kolmogorov-Smirnov distance between the two score '
                                                 'distributions before a significant shift fails the canary.',
                                            above=0, high=1)
    canary_max_error_ratio: float = setting(0.001, 'Share of mirrored requests the canary may fail that stable '
                                                   'answered; significantly more: FAIL.', above=0, high=0.5)
    canary_max_latency_increase: float = setting(0.25, "How much slower than stable's (p50) the canary may be, "
                                                       'e.g. 0.25: 25%; a significantly slower canary beyond it: FAIL.',
                                                 above=0, high=100)

    @property
    def window_sizes(self) -> Tuple[int, ...]:
        return tuple(self.min_window * factor for factor in (1, 2, 4, 10, 20, 40, 100))


@dataclasses.dataclass(frozen=True)
class ReleaseSettings:
    """Release governance: what `petpark promote` requires before a label moves."""
    PREFIX = 'release_'
    require_approval: bool = setting(True, '`petpark promote --label stable` (and a rollback) needs an approval of '
                                           'the version (`petpark models approve`); false turns the rule off (a lab). '
                                           'A FAIL canary verdict blocks `stable` either way; `--force --reason` '
                                           'overrides both, recorded as an override.')


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
        'backbone_weights': os.path.join(SHARED_ROOT, 'models', training_config.PRETRAINED[_REAL_BACKBONE].file_name),
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


@dataclasses.dataclass(frozen=True)
class PushDestinations:
    """Where a pushed version goes: the serving, edge and model-card folders of one model name."""
    model_name: str
    serving_model_dir: str
    edge_model_dir: str
    model_card_dir: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """The pipeline's own settings, then one field per group."""
    profile: str = setting('demo', 'Named defaults for the settings below: `demo` (synthetic frames) or `real` '
                                   '(the Kaggle photos; see docs/real_photos.md). Environment variables and flags '
                                   'override them.', choices=tuple(PROFILES))
    home: str = setting('petpark_home', 'Pipeline root, MLMD sqlite and serving push directory live below it.',
                        kind='path')
    metadata: str = setting('', 'MLMD store. Empty: the sqlite file `<home>/metadata.sqlite`; else PostgreSQL as '
                                '`postgresql://USER:PASSWORD@HOST:PORT/DBNAME` (special characters percent-encoded; '
                                'the password is never shown). `petpark airflow up` gives its tasks its own.',
                            kind='url')
    pipeline_name: str = setting('petpark', 'TFX pipeline name.', kind='name')
    model_name: str = setting('petpark', 'Served model name: `<home>/serving/<model_name>/`.', kind='name')
    seed: int = setting(0, 'Seed for data generation, tuning and training.', low=0, high=2 ** 31 - 2,
                        config=('tuning.seed', 'training.seed'))
    enable_cache: bool = setting(True, 'Reuse outputs of unchanged components.')
    data: DataSettings = DataSettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    serving_check: ServingCheckSettings = ServingCheckSettings()
    export: ExportSettings = ExportSettings()
    beam: BeamSettings = BeamSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    release: ReleaseSettings = ReleaseSettings()
    airflow: AirflowSettings = AirflowSettings()

    @classmethod
    def from_env(cls, overrides: Optional[Mapping[str, Any]] = None, environ: Optional[Mapping[str, str]] = None,
                 check_data_root: bool = True) -> 'Settings':
        """The profile's defaults, then environment values, then non-None `overrides` (by setting name);
        local paths made absolute. Unknown PETPARK_* variables are warned about, naming the closest setting.

        `check_data_root=False` leaves a missing data folder to the ImageExampleGen run (a scheduled
        DAG must still parse, and its run fail with the component's error)."""
        environ = os.environ if environ is None else environ
        overrides = {name: value for name, value in (overrides or {}).items() if value is not None}
        unknown = sorted(set(overrides) - set(DECLARED))
        if unknown:
            raise ValueError(f'Unknown setting {unknown[0]!r}{_closest(unknown[0], DECLARED)}')
        warn_about_unknown_variables(environ)
        profile = overrides.get('profile') or environ.get(DECLARED['profile'].env) or 'demo'
        if profile not in PROFILES:
            raise ValueError(f'Unknown profile {profile!r}: one of {", ".join(PROFILES)} (--profile / PETPARK_PROFILE)')
        values = {}
        for name, declared in DECLARED.items():
            raw = overrides.get(name, environ.get(declared.env, PROFILES[profile].get(name)))
            value = declared.default if raw is None else declared.parse(raw)
            values[name] = absolute(value) if declared.kind == 'path' and value != 'imagenet' else value
        values['profile'] = profile
        settings = cls._from_values(values)
        settings.validate(check_data_root)
        return settings

    @classmethod
    def _from_values(cls, values: Dict[str, Any]) -> 'Settings':
        groups = {}
        for field in dataclasses.fields(cls):
            if _DECLARATION not in field.metadata:
                group = field.type
                groups[field.name] = group(**{f.name: values[_setting_name(group, f)] for f in dataclasses.fields(group)})
        own = {f.name: values[f.name] for f in dataclasses.fields(cls) if _DECLARATION in f.metadata}
        return cls(**own, **groups)

    def value(self, name: str) -> Any:
        """A setting's value by its name (as `--set` and PROFILES name it)."""
        declared = DECLARED[name]
        holder = getattr(self, declared.group) if declared.group else self
        return getattr(holder, declared.field)

    def validate(self, check_data_root: bool = True) -> None:
        """Bounds and choices (checked as values are parsed), then what involves more than one value."""
        if check_data_root and self.data.data_root and uris.is_local(self.data.data_root) \
                and not os.path.isdir(self.data.data_root):
            raise ValueError(f'PETPARK_DATA_ROOT: {self.data.data_root!r} is not a directory')
        if check_data_root and uris.is_local(self.home) and os.path.exists(self.home) and not os.path.isdir(self.home):
            raise ValueError(f'PETPARK_HOME: {self.home!r} exists and is not a directory')
        self.airflow.start()
        if self.metadata:
            postgresql_parts(self.metadata)
        self.beam.arg_list()
        self.training_config()

    def training_config(self) -> training_config.TrainingConfig:
        """The validated model/training config, built from the settings that declare a `config` target;
        a bad value names its PETPARK_* variable."""
        sections: Dict[str, Dict[str, Any]] = {name: {} for name in training_config.SECTIONS}
        source = {}
        for name, declared in DECLARED.items():
            for target in declared.config:
                section, field = target.split('.')
                value = self.value(name)
                if declared.to_config is not None:
                    try:
                        value = declared.to_config(value)
                    except ValueError as e:
                        raise ValueError(f'{declared.env} {e}') from None
                sections[section][field] = value
                source[target] = source[section] = declared.env
        config = training_config.TrainingConfig(
            **{name: training_config.SECTIONS[name](**values) for name, values in sections.items()})
        try:
            return config.validate()
        except training_config.ConfigError as e:
            raise ValueError(f'{source.get(e.field, source.get(e.field.split(".")[0], e.field))} {e.problem}') from None

    # -- what the settings imply --------------------------------------------------------------
    @property
    def input_base(self) -> str:
        return self.data.data_root or self.synthetic_data_root

    @property
    def synthetic_data_root(self) -> str:
        return os.path.join(self.home, 'data', 'synthetic')

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.home, 'pipeline_root', self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.home, 'metadata.sqlite')

    def metadata_connection(self):
        """MLMD's ConnectionConfig: PostgreSQL from PETPARK_METADATA, else the sqlite file `metadata_path`
        (created when first written)."""
        from ml_metadata.proto import metadata_store_pb2
        if not self.metadata:
            sqlite = metadata_store_pb2.SqliteMetadataSourceConfig
            return metadata_store_pb2.ConnectionConfig(sqlite=sqlite(
                filename_uri=self.metadata_path, connection_mode=sqlite.READWRITE_OPENCREATE))
        return metadata_store_pb2.ConnectionConfig(
            postgresql=metadata_store_pb2.PostgreSQLDatabaseConfig(**postgresql_parts(self.metadata)))

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
    def destinations(self) -> PushDestinations:
        return PushDestinations(self.model_name, self.serving_model_dir, self.edge_model_dir, self.model_card_dir)

    @property
    def request_log_dir(self) -> str:
        return self.monitoring.log_dir or os.path.join(self.home, 'request_logs')

    @property
    def monitoring_dir(self) -> str:
        """Monitoring reports, by model, version and window."""
        return os.path.join(self.home, 'monitoring', self.model_name)

    @property
    def airflow_home(self) -> str:
        """AIRFLOW_HOME of `petpark airflow up`: airflow.cfg, dags/, logs/, postgres/."""
        return os.path.join(self.home, 'airflow')

    @property
    def models_config_path(self) -> str:
        """The models.config `petpark promote` writes and `petpark models` reads labels from."""
        return os.path.join(os.path.dirname(self.serving_model_dir), 'models.config')


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting as the declarations define it: where it lives and how its text is read."""
    name: str
    group: str  # '' for the pipeline's own settings
    group_doc: str
    field: str
    type: type
    default: Any
    declaration: Declaration

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def __getattr__(self, attribute: str) -> Any:  # help, low, high, above, choices, kind, config, to_config
        if attribute == 'declaration':
            raise AttributeError(attribute)
        return getattr(self.declaration, attribute)

    def parse(self, raw: Any) -> Any:
        """Text (or a value) -> the typed value, within its bounds; errors name the variable."""
        text = str(raw).strip()
        try:
            if self.type is bool:
                if isinstance(raw, bool):
                    return raw
                if text.lower() in ('1', 'true', 'yes', 'on'):
                    return True
                if text.lower() in ('0', 'false', 'no', 'off'):
                    return False
                raise ValueError('expected true/false')
            value = self.type(text) if self.type in (int, float) else text
        except ValueError as e:
            raise ValueError(f'{self.env}={_shown(text)}: {e}') from None
        self.check(value)
        return value

    def shown(self, value: Any) -> Any:
        """The value as `petpark settings` prints it: a URL's password masked."""
        return masked_url(value) if self.kind == 'url' else value

    def check(self, value: Any) -> None:
        if self.type in (int, float):
            if value != value or value in (float('inf'), float('-inf')):
                raise ValueError(f'{self.env} must be a finite number, got {value}')
            if self.low is not None and self.high is not None and not self.low <= value <= self.high:
                raise ValueError(f'{self.env} must be between {_number(self.low)} and {_number(self.high)}, got {value}')
            if self.low is not None and value < self.low:
                raise ValueError(f'{self.env} must be at least {_number(self.low)}, got {value}')
            if self.above is not None and value <= self.above:
                bound = 'positive' if self.above == 0 else f'above {_number(self.above)}'
                raise ValueError(f'{self.env} must be {bound}, got {value}')
            if self.high is not None and value > self.high:
                raise ValueError(f'{self.env} must be at most {_number(self.high)}, got {value}')
        if self.choices and value not in self.choices:
            raise ValueError(f'{self.env} must be one of {self.choices}, got {value!r}')
        if self.kind == 'name' and not _NAME.match(value):
            raise ValueError(f'{self.env}={_shown(value)}: a name of letters, digits, ".", "_" and "-" (it becomes '
                             'a folder name; no "/" and no leading "."), at most 100 characters')


def _setting_name(group: type, field: dataclasses.Field) -> str:
    return getattr(group, 'PREFIX', '') + field.name


def _declarations() -> Dict[str, Declared]:
    found = {}
    for field in dataclasses.fields(Settings):
        if _DECLARATION in field.metadata:
            found[field.name] = Declared(field.name, '', PIPELINE_GROUP_DOC, field.name, field.type, field.default,
                                         field.metadata[_DECLARATION])
            continue
        for inner in dataclasses.fields(field.type):
            name = _setting_name(field.type, inner)
            found[name] = Declared(name, field.name, field.type.__doc__, inner.name, inner.type, inner.default,
                                   inner.metadata[_DECLARATION])
    return found


DECLARED: Dict[str, Declared] = _declarations()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f'{value:g}'


def _shown(text: str, limit: int = 80) -> str:
    """A value as an error message quotes it: repr, cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f'... ({len(text)} characters)'


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f'; did you mean {close[0]!r}?' if close else ''


def warn_about_unknown_variables(environ: Mapping[str, str]) -> List[str]:
    """Warns (UnknownSettingWarning) about each PETPARK_* variable that is no setting; returns them."""
    known = {declared.env for declared in DECLARED.values()} | set(OTHER_VARIABLES)
    unknown = sorted(key for key in environ if key.startswith(ENV_PREFIX) and key not in known)
    for key in unknown:
        warnings.warn(f'{key} is not a petpark setting and is ignored{_closest(key, known)} '
                      '(`petpark settings` lists them)', UnknownSettingWarning, stacklevel=3)
    return unknown


POSTGRESQL_FORM = 'postgresql://USER:PASSWORD@HOST:PORT/DBNAME'


def masked_url(url: str) -> str:
    """The URL with its password (from the `:` after the user to the last `@`) as `***`."""
    head, at, tail = url.rpartition('@')
    start = head.find('://') + 3 if '://' in head else 0
    colon = head.find(':', start)
    return url if not at or colon < 0 else f'{head[:colon + 1]}***@{tail}'


def postgresql_parts(url: str) -> Dict[str, str]:
    """PETPARK_METADATA's PostgreSQL URL as PostgreSQLDatabaseConfig fields (host, port, user, password,
    dbname); a ValueError naming the variable, with the password masked, when it is not one."""
    def bad(problem: str) -> ValueError:
        return ValueError(f'PETPARK_METADATA={masked_url(url)!r}: {problem}; expected empty (the sqlite file '
                          f'<home>/metadata.sqlite) or {POSTGRESQL_FORM}')
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise bad('the host or port cannot be read (a port is a number from 1 to 65535)') from None
    if parts.scheme not in ('postgresql', 'postgres'):
        raise bad(f'the scheme must be postgresql, not {parts.scheme!r}' if parts.scheme else 'not a URL')
    if not parts.username or not parts.hostname:
        raise bad('it needs a user and a host')
    if parts.query or parts.fragment or '@' in parts.path:
        raise bad('no ?options or #fragment are read, and "/", "?" and "#" in a password must be percent-encoded')
    if port == 0:
        raise bad('the port must be a number from 1 to 65535')
    dbname = urllib.parse.unquote(parts.path[1:])
    if not dbname or '/' in parts.path[1:]:
        raise bad('it needs one database name after the host')
    found = {'host': parts.hostname, 'port': str(port or 5432), 'user': urllib.parse.unquote(parts.username),
             'password': urllib.parse.unquote(parts.password or ''), 'dbname': dbname}
    if any(re.search(r"[\s'\\]", value) for value in found.values()):  # ml-metadata 1.16 does not quote them
        raise bad('ml-metadata passes the user, password, host and database to libpq unquoted: none may hold '
                  'a space, a quote or a backslash')
    return found


def absolute(path: str) -> str:
    """A local path made absolute (~ expanded); URIs and '' unchanged."""
    return os.path.abspath(os.path.expanduser(path)) if path and uris.is_local(path) else path


def groups() -> Iterator[Tuple[str, str, List[Declared]]]:
    """(group name, its description, its settings) in declaration order."""
    seen: Dict[str, List[Declared]] = {}
    for declared in DECLARED.values():
        seen.setdefault(declared.group, []).append(declared)
    for group, members in seen.items():
        yield group or 'pipeline', members[0].group_doc.strip().splitlines()[0], members


def _default_text(declared: Declared) -> str:
    if declared.default == '':
        return '(empty)'
    if isinstance(declared.default, bool):
        return f'`{str(declared.default).lower()}`'
    return f'`{declared.default}`'


def markdown_table() -> str:
    """The settings table of docs/settings.md, group by group."""
    lines = []
    for group, description, members in groups():
        lines += [f'### {group}', '', description, '', '| variable | default | meaning |', '| --- | --- | --- |']
        lines += [f'| `{d.env}` | {_default_text(d)} | {d.help} |' for d in members]
        lines.append('')
    lines += ['### not settings', '', 'Variables of the same prefix that scripts, tests and deployment files read.', '',
              '| variable | read by |', '| --- | --- |']
    lines += [f'| `{name}` | {what} |' for name, what in OTHER_VARIABLES.items()]
    return '\n'.join(lines) + '\n'



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
