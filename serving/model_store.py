"""Model versions on disk -> loaded servables, the way TF Serving manages them.

- Versions are numeric folders under a model's base path; one counts only once its
  `saved_model.pb` exists (petpark's pusher publishes a version by renaming it into place).
- Version policies: latest N (default 1), all, specific versions. Under latest N, a version
  that fails to load gives its place to the next older one (TF Serving would serve nothing).
- Availability preserving: an old version is unloaded only once a newer aspired version is
  AVAILABLE, so a version that fails to load (END with its error) never replaces a working
  one. An unloaded version stops taking requests at once and finishes those in flight.
- Deleting a version folder unloads that version once another aspired one serves; a version
  unloaded earlier loads again when it becomes aspired (deleting the newest rolls back). With no
  version folder left, every version is unloaded; a base path that is gone changes nothing (both
  as in TF Serving). Folder names of digits beyond int64 are ignored, and logged once.
- Labels (`stable`, `canary`, ...) name versions; a label may only point at an AVAILABLE one.
"""
import dataclasses
import logging
import os
import threading
from typing import Callable, Collection, Dict, Iterator, List, Optional, Set, Tuple
from contextlib import contextmanager

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import errors
from petpark.serving.concurrency import repeat_until_stopped
from petpark.serving.layout import versions_on_disk
from petpark.serving.log_limits import RateLimitedLog

State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger('petpark.serving.models')
_poll_log = RateLimitedLog(_log)


class Servable:
    """Base for a loaded model version; tracks requests in flight so unloading can wait."""

    def __init__(self):
        self._in_flight = 0
        self._idle = threading.Condition()

    def enter(self) -> None:
        with self._idle:
            self._in_flight += 1

    def leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0)

    def close(self) -> None:
        """Releases what the servable holds (threads, ...) once it is unloaded and idle."""


@dataclasses.dataclass
class VersionRecord:
    version: int
    state: int = State.START
    error: str = ''
    servable: Optional[Servable] = None
    stamp: float = 0.0  # saved_model.pb mtime when loading was attempted


@dataclasses.dataclass
class ModelRecord:
    config: model_server_config_pb2.ModelConfig
    versions: Dict[int, VersionRecord] = dataclasses.field(default_factory=dict)


def aspired_versions(config: model_server_config_pb2.ModelConfig, on_disk: List[int],
                     unloadable: Collection[int] = ()) -> List[int]:
    """The versions a model's version policy wants served (latest 1 when unset).

    For the latest-N policy, versions in `unloadable` (they failed to load and are unchanged on
    disk since) give their place to the next older ones: one bad folder never leaves a model
    with nothing to serve. TF Serving does not do this; the README says so. `all` and `specific`
    name their versions and get no substitutes.
    """
    policy = config.model_version_policy
    kind = policy.WhichOneof('policy_choice')
    if kind == 'all':
        return sorted(on_disk)
    if kind == 'specific':
        return sorted(v for v in on_disk if v in set(policy.specific.versions))
    count = policy.latest.num_versions if kind == 'latest' and policy.latest.num_versions else 1
    loadable = [v for v in sorted(on_disk) if v not in unloadable]
    return loadable[-count:]


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """TF Serving's checks on a model_config_list: names unique, absolute base paths."""
    if config.WhichOneof('config') != 'model_config_list':
        raise errors.invalid_argument('ModelServerConfig must contain a model_config_list')
    names = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise errors.invalid_argument('ModelConfig has no name')
        if model.name in names:
            raise errors.invalid_argument(f'Illegal to list model {model.name} multiple times in config list')
        names.add(model.name)
        if not os.path.isabs(model.base_path):
            raise errors.invalid_argument(
                f'Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}')
        if model.model_platform and model.model_platform != 'tensorflow':
            raise errors.invalid_argument(f'Model {model.name}: unsupported model_platform {model.model_platform}')
        if model.HasField('logging_config'):  # open-source TF Serving refuses it the same way
            raise errors.invalid_argument(
                f'Model {model.name}: logging_config in a model config is not supported (TF Serving: "No '
                'request-logger-creator provided"); give petpark serve --request_logging_config_file instead')


class ModelStore:
    """Serves the models of a ModelServerConfig; `poll()` brings them in line with the disk."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig,
                 loader: Callable[[str, str, int], Servable]):
        validate_config(config)
        self._loader = loader
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()  # one pass at a time: the poll thread's or a reload's
        self._models = {m.name: ModelRecord(m) for m in config.model_config_list.config}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._reported_folders: Set[Tuple[str, str]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, poll_seconds: float) -> None:
        """Loads what is on disk now, then polls every `poll_seconds` (0: never again)."""
        self.poll()
        if poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, args=(poll_seconds,), daemon=True,
                                            name='model-store-poll')
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _poll_loop(self, poll_seconds: float) -> None:
        repeat_until_stopped(self.poll, poll_seconds, self._stop, 'polling the model folders', _poll_log)

    def poll(self) -> None:
        """One pass: load newly aspired versions, then unload what they replace. A model that cannot
        be polled (e.g. no descriptor left to list its folder) does not keep the others from it; the
        pass then raises, naming each such model."""
        with self._lock:
            models = list(self._models.values())
        failures = []
        with self._poll_lock:
            for model in models:
                try:
                    self._poll_model(model)
                except Exception as e:
                    failures.append(f'model {model.config.name}: {type(e).__name__}: {e}')
        if failures:
            raise RuntimeError('; '.join(failures))

    def _poll_model(self, model: ModelRecord) -> None:
        base_path = model.config.base_path
        if not os.path.isdir(base_path):
            _poll_log.warning('model %s: base path %s not found; its versions stay as they are', model.config.name, base_path)
            return
        on_disk = versions_on_disk(base_path, on_out_of_range=lambda name: self._report_folder(model, name))
        while True:  # until every aspired version is loaded or has failed (each version loads once)
            failed = [v for v, r in model.versions.items()
                      if r.state == State.END and r.error and r.stamp == on_disk.get(v)]
            aspired = aspired_versions(model.config, list(on_disk), failed)
            pending = [v for v in sorted(aspired, reverse=True) if not self._loaded_or_failed(model, v, on_disk[v])]
            if not pending:
                break
            for version in pending:
                self._load(model, version, on_disk[version])
        serving = [v for v in aspired if model.versions.get(v) and model.versions[v].state == State.AVAILABLE]
        if not serving and aspired_versions(model.config, list(on_disk)):
            return  # availability preserving: keep whatever serves until an aspired version does
        for version, record in list(model.versions.items()):
            if version not in aspired and record.state == State.AVAILABLE:
                self._unload(model, record)

    def _report_folder(self, model: ModelRecord, name: str) -> None:
        if (model.config.base_path, name) not in self._reported_folders:
            self._reported_folders.add((model.config.base_path, name))
            _log.warning('model %s: folder %s in %s is not an int64 version number and is ignored, as TF Serving does',
                         model.config.name, name, model.config.base_path)

    @staticmethod
    def _loaded_or_failed(model: ModelRecord, version: int, stamp: float) -> bool:
        """Loaded, or failed to load from this very saved_model.pb; an unloaded version may load again."""
        record = model.versions.get(version)
        return bool(record) and (record.state in (State.AVAILABLE, State.LOADING)
                                 or record.state == State.END and bool(record.error) and record.stamp == stamp)

    def _load(self, model: ModelRecord, version: int, stamp: float) -> None:
        record = VersionRecord(version, State.LOADING, stamp=stamp)
        with self._lock:
            model.versions[version] = record
        try:
            servable = self._loader(model.config.name, os.path.join(model.config.base_path, str(version)), version)
        except Exception as e:  # any load failure is reported on the version and logged, never raised
            with self._lock:
                record.state, record.error = State.END, f'{type(e).__name__}: {e}'
            _log.error('model %s version %d failed to load and will not be served: %s',
                       model.config.name, version, record.error)
            return
        with self._lock:
            record.servable, record.state = servable, State.AVAILABLE

    def _unload(self, model: ModelRecord, record: VersionRecord) -> None:
        with self._lock:
            record.state = State.UNLOADING
            servable, record.servable = record.servable, None
        servable.wait_idle()
        try:
            servable.close()
        except Exception as e:  # the version is unloaded all the same
            _log.error('model %s version %d did not close cleanly: %s: %s', model.config.name, record.version,
                       type(e).__name__, e)
        with self._lock:
            record.state = State.END

    # -- configuration ----------------------------------------------------------------------
    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Replaces the whole config; models left out are unloaded. Invalid: old one stays."""
        validate_config(config)
        with self._lock:
            for model_config in config.model_config_list.config:
                current = self._models.get(model_config.name)
                available = {v for v, r in current.versions.items() if r.state == State.AVAILABLE} if current else set()
                for label, version in model_config.version_labels.items():
                    if version not in available and current is not None:
                        raise errors.failed_precondition(
                            f'Request to assign label to version {version} of model {model_config.name}, '
                            'which is not currently available for inference')
            removed = [self._models[name] for name in set(self._models) - {m.name for m in config.model_config_list.config}]
            for model_config in config.model_config_list.config:
                if model_config.name in self._models:
                    self._models[model_config.name].config = model_config
                else:
                    self._models[model_config.name] = ModelRecord(model_config)
            for model in removed:
                del self._models[model.config.name]
        for model in removed:
            for record in list(model.versions.values()):
                if record.state == State.AVAILABLE:
                    self._unload(model, record)
        self.poll()

    # -- queries ----------------------------------------------------------------------------
    def model_names(self) -> List[str]:
        with self._lock:
            return sorted(self._models)

    def status(self, name: str, version: Optional[int] = None) -> List[VersionRecord]:
        """Version records, newest first (one when `version` is given)."""
        with self._lock:
            model = self._models.get(name)
            if model is None or not model.versions:
                raise errors.not_found(f'Could not find any versions of model {name}')
            if version is not None:
                if version not in model.versions:
                    raise errors.not_found(f'Could not find version {version} of model {name}')
                return [dataclasses.replace(model.versions[version])]
            return [dataclasses.replace(r) for _, r in sorted(model.versions.items(), reverse=True)]

    def labels(self, name: str) -> Dict[str, int]:
        """The model's version labels ({} for an unknown model)."""
        with self._lock:
            model = self._models.get(name)
            return dict(model.config.version_labels) if model is not None else {}

    def resolve_label(self, name: str, label: str) -> int:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise errors.not_found(f'Servable not found for request: Latest({name})')
            if label not in model.config.version_labels:
                raise errors.invalid_argument(f'Unrecognized servable version label: {label}')
            return model.config.version_labels[label]

    def version_path(self, name: str, version: int) -> str:
        """The folder a version being served was loaded from."""
        with self._lock:
            model = self._models.get(name)
            record = model.versions.get(version) if model else None
            if record is None or record.state != State.AVAILABLE:
                raise errors.not_found(f'Servable not found for request: Specific({name}, {version})')
            return os.path.join(model.config.base_path, str(version))

    @contextmanager
    def acquire(self, name: str, version: Optional[int] = None, label: Optional[str] = None) -> Iterator[Servable]:
        """The servable for (name, version | label | latest), held for the `with` block."""
        if label is not None:
            version = self.resolve_label(name, label)
        request = f'Specific({name}, {version})' if version is not None else f'Latest({name})'
        with self._lock:
            model = self._models.get(name)
            candidates = [r for r in model.versions.values() if r.state == State.AVAILABLE] if model else []
            if version is not None:
                candidates = [r for r in candidates if r.version == version]
            if not candidates:
                raise errors.not_found(f'Servable not found for request: {request}')
            servable = max(candidates, key=lambda r: r.version).servable
            servable.enter()
        try:
            yield servable
        finally:
            servable.leave()
