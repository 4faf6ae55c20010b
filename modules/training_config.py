"""The one model/training configuration, declared here and nowhere else.

The pipeline builds it from the settings and validates it before any component runs; each of
Transform, Tuner and Trainer receives, through `custom_config`, the sections it reads
(`custom_config(component)`), so a change that only matters to training does not re-run
Transform. Module code reads its sections back with `from_custom_config`, which rejects
missing or unknown keys: module code has no defaults of its own.
"""
import dataclasses
import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Backbone:
    """An ImageNet backbone from a local Keras `include_top=False` .h5 file with a known sha256."""
    architecture: str  # keras.applications class name
    alpha: float
    sha256: str
    file_name: str  # the name it is published under


# Pretrained backbones; their weights file is required and must match the hash before loading.
PRETRAINED = {
    'mobilenet_v1_0.25': Backbone('MobileNet', 0.25, 'dbdb03ee2a22fd895301636cd328b234bb3a9952358f436d82f46b81e0d5b0bf',
                                  'mobilenet_2_5_224_tf_no_top.h5'),
    'mobilenet_v2_0.5': Backbone('MobileNetV2', 0.5, '279052de2cfa801003aa6cc25cc4d007d35dd0b76f06935268c79788b7642d05',
                                 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5'),
    'mobilenet_v1_1.0': Backbone('MobileNet', 1.0, 'ef63c534309bf71b631adc7047c670cc4871f57465917588909aa3a3d2f7055c',
                                 'mobilenet_v1_1_0_224_imagenet_no_top_converted.h5'),
}
ALIASES = {'mobilenet': 'mobilenet_v1_0.25'}  # the name the first transfer-learning backbone had
BACKBONES = ('cnn',) + tuple(ALIASES) + tuple(PRETRAINED)


def pretrained(backbone: str) -> Optional[Backbone]:
    """The pretrained backbone `backbone` names (None for 'cnn')."""
    return PRETRAINED.get(ALIASES.get(backbone, backbone))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
TUNER_ALGORITHMS = ('random', 'bayesian', 'hyperband')
MIN_IMAGE_SIZE = 16


class ConfigError(ValueError):
    """A bad configuration value; `field` is its dotted path, e.g. 'model.backbone'."""

    def __init__(self, field: str, problem: str):
        super().__init__(f'{field} {problem}')
        self.field = field
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """A tunable: the values it may take (the first is used without tuning) and its bounds."""
    values: Tuple[Any, ...]
    kind: type
    low: float
    high: float

    def check(self, name: str, value: Any) -> None:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (self.kind is int and not float(value).is_integer()):
            kind = 'an integer' if self.kind is int else 'a number'
            raise ConfigError('model.search_space', f'{name!r}: {value!r} is not {kind}')
        if not self.low <= value <= self.high:
            raise ConfigError('model.search_space', f'{name!r}: {value!r} is outside [{self.low}, {self.high}]')


# Every tunable of modules/model.py; PETPARK_SEARCH_SPACE replaces any entry's values.
HYPERPARAMETERS: Dict[str, Hyperparameter] = {
    'conv_blocks': Hyperparameter((4, 3), int, 1, 6),
    'filters': Hyperparameter((32, 24), int, 4, 256),
    'dense_units': Hyperparameter((64, 128), int, 4, 4096),
    'dropout': Hyperparameter((0.3, 0.2), float, 0.0, 0.9),
    'learning_rate': Hyperparameter((2e-3, 1e-3, 3e-3), float, 1e-6, 1.0),
    # Rotation/zoom/translation/contrast strength on top of horizontal flips. The synthetic
    # frames already vary pose and scale (0 learns fastest there); real photos gain from ~0.1.
    'augmentation': Hyperparameter((0.0, 0.1), float, 0.0, 0.5),
}


def default_search_space() -> Dict[str, List[Any]]:
    return {name: list(h.values) for name, h in HYPERPARAMETERS.items()}


def search_space_with(overrides: Optional[Dict[str, Sequence[Any]]]) -> Dict[str, List[Any]]:
    """The default search space with `overrides` replacing whole entries."""
    return dict(default_search_space(), **{name: list(values) for name, values in (overrides or {}).items()})


def _at_least(field: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f'must be an integer, got {value!r}')
    if value < low:
        raise ConfigError(field, f'must be at least {low}, got {value!r}')


@dataclasses.dataclass(frozen=True)
class PreprocessingConfig:
    """What Transform needs: the model's input size in pixels per side."""
    image_size: int

    def validate(self, where: str) -> None:
        _at_least(f'{where}.image_size', self.image_size, MIN_IMAGE_SIZE)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: backbone, local weights file and hyperparameter search space."""
    backbone: str
    backbone_weights: Optional[str]
    search_space: Dict[str, List[Any]]

    def validate(self, where: str) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f'{where}.backbone', f'must be one of {", ".join(BACKBONES)}; got {self.backbone!r}')
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            raise ConfigError(f'{where}.backbone_weights', f'must be a path, got {self.backbone_weights!r}')
        self._check_weights(where)
        unknown = sorted(set(self.search_space) - set(HYPERPARAMETERS))
        if unknown:
            raise ConfigError(f'{where}.search_space', f'has unknown hyperparameters {unknown}; '
                                                       f'known: {sorted(HYPERPARAMETERS)}')
        missing = sorted(set(HYPERPARAMETERS) - set(self.search_space))
        if missing:
            raise ConfigError(f'{where}.search_space', f'lacks hyperparameters {missing}')
        for name, values in self.search_space.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f'{where}.search_space', f'{name!r} needs a non-empty list of values, got {values!r}')
            for value in values:
                HYPERPARAMETERS[name].check(name, value)

    def _check_weights(self, where: str) -> None:
        """A pretrained backbone needs its weights file, byte for byte: never a silent random init."""
        backbone = pretrained(self.backbone)
        if backbone is None:
            if self.backbone_weights:
                raise ConfigError(f'{where}.backbone_weights', f'is for pretrained backbones; {self.backbone!r} '
                                                               'trains from scratch')
            return
        if not self.backbone_weights:
            raise ConfigError(f'{where}.backbone_weights', f'is required for {self.backbone!r}: the local '
                                                           f'{backbone.file_name} (sha256 {backbone.sha256[:12]}…)')
        if self.backbone_weights == 'imagenet':
            return  # Keras downloads its own file and checks its own hash
        path = self.backbone_weights
        if not os.path.isfile(path):
            raise ConfigError(f'{where}.backbone_weights', f'{path!r} is not a file (expected {backbone.file_name})')
        digest = file_sha256(path)
        if digest != backbone.sha256:
            raise ConfigError(f'{where}.backbone_weights', f'{path!r} has sha256 {digest}, not the {self.backbone} '
                                                           f'weights ({backbone.file_name}, {backbone.sha256})')

    def fixed_hyperparameters(self) -> Dict[str, Any]:
        """The first value of each hyperparameter: what trains when the Tuner does not run."""
        return {name: values[0] for name, values in self.search_space.items()}


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """One fitting run: the training, or each tuner trial."""
    epochs: int
    batch_size: int
    seed: int

    def validate(self, where: str) -> None:
        _at_least(f'{where}.epochs', self.epochs, 1)
        _at_least(f'{where}.batch_size', self.batch_size, 1)
        _at_least(f'{where}.seed', self.seed, 0)


@dataclasses.dataclass(frozen=True)
class TuningConfig(FitConfig):
    """The search: a KerasTuner algorithm and its number of trials, each fitted as FitConfig says."""
    algorithm: str
    max_trials: int

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.algorithm not in TUNER_ALGORITHMS:
            raise ConfigError(f'{where}.algorithm', f'must be one of {TUNER_ALGORITHMS}, got {self.algorithm!r}')
        _at_least(f'{where}.max_trials', self.max_trials, 1)


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """After the frozen-backbone training: `epochs` over `steps` with the backbone's top `layers`
    trainable, from `learning_rate` (cosine decay). epochs=0: no fine-tuning."""
    epochs: int
    steps: int
    layers: int
    learning_rate: float

    def validate(self, where: str) -> None:
        _at_least(f'{where}.epochs', self.epochs, 0)
        _at_least(f'{where}.steps', self.steps, 1)
        _at_least(f'{where}.layers', self.layers, 1)
        if isinstance(self.learning_rate, bool) or not isinstance(self.learning_rate, (int, float)) \
                or not 0 < self.learning_rate <= 1:
            raise ConfigError(f'{where}.learning_rate', f'must be in (0, 1], got {self.learning_rate!r}')


SECTIONS = {'preprocessing': PreprocessingConfig, 'model': ModelConfig, 'tuning': TuningConfig,
             'training': FitConfig, 'fine_tuning': FineTuneConfig}
# The sections each component reads.
COMPONENT_SECTIONS = {
    'Transform': ('preprocessing',),
    'Tuner': ('preprocessing', 'model', 'tuning'),
    'Trainer': ('preprocessing', 'model', 'training', 'fine_tuning'),
}


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Sections that a component did not receive are None."""
    preprocessing: Optional[PreprocessingConfig] = None
    model: Optional[ModelConfig] = None
    tuning: Optional[TuningConfig] = None
    training: Optional[FitConfig] = None
    fine_tuning: Optional[FineTuneConfig] = None

    def validate(self) -> 'TrainingConfig':
        for name in SECTIONS:
            section = getattr(self, name)
            if section is not None:
                section.validate(name)
        if self.fine_tuning and self.fine_tuning.epochs and self.model and pretrained(self.model.backbone) is None:
            raise ConfigError('fine_tuning.epochs', f'must be 0 for {self.model.backbone!r}: only a pretrained '
                                                    'backbone has layers to unfreeze')
        return self

    def custom_config(self, component: str) -> Dict[str, Any]:
        """The JSON-able sections `component` reads, for its custom_config."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in COMPONENT_SECTIONS[component]}

    @classmethod
    def from_custom_config(cls, custom_config: Optional[Dict[str, Any]], component: str) -> 'TrainingConfig':
        """The sections `component` reads, validated; every key must be present and known."""
        custom_config = custom_config or {}
        expected = COMPONENT_SECTIONS[component]
        missing = [name for name in expected if name not in custom_config]
        if missing:
            raise ConfigError('custom_config', f'of {component} lacks the section(s) {missing}; the pipeline '
                                               'passes TrainingConfig.custom_config(component)')
        sections = {}
        for name in expected:
            section_class, values = SECTIONS[name], custom_config[name]
            fields = sorted(f.name for f in dataclasses.fields(section_class))
            if not isinstance(values, dict) or sorted(values) != fields:
                given = sorted(values) if isinstance(values, dict) else values
                raise ConfigError(name, f'must have exactly the keys {fields}, got {given}')
            sections[name] = section_class(**values)
        return cls(**sections).validate()
