"""`petpark` command line: synth (write the default dataset), run (the whole pipeline), settings,
serving, registry, reports, Airflow. Each command only parses, chooses and calls."""
import argparse
import datetime
import json
import os
import sys
import warnings
from typing import List, Optional

from petpark.modules import training_config
from petpark.pipeline import console, settings as declared, synthetic_data
from petpark.pipeline.settings import PROFILES, Settings


def _synth(args: argparse.Namespace) -> int:
    try:
        rows = synthetic_data.generate(args.out, args.count, args.seed)
    except OSError as e:
        raise ValueError(f'cannot write the dataset to {args.out}: {e.strerror} ({e.filename})') from None
    print(f'Wrote {len(rows)} images and {synthetic_data.METADATA_FILE} to {os.path.abspath(args.out)}')
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {'profile': args.profile, 'data_root': args.data_root, 'home': args.home,
                 'input_pattern': args.input_pattern,
                 'backbone': args.backbone, 'backbone_weights': args.backbone_weights, 'tune': args.tune}
    for assignment in args.set or []:
        name, sep, value = assignment.partition('=')
        if not sep:
            raise ValueError(f'--set expects NAME=VALUE, got {assignment!r}')
        overrides[name.strip()] = value
    return overrides


def _default_data(settings: Settings) -> None:
    """Generates the synthetic default dataset when no data root is set and it is not there yet."""
    if not settings.data.data_root and not synthetic_data.exists(settings.synthetic_data_root):
        print(f'Generating {settings.data.synthetic_count} synthetic images into {settings.synthetic_data_root}')
        synthetic_data.generate(settings.synthetic_data_root, settings.data.synthetic_count, settings.seed)


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(_overrides(args))
    _default_data(settings)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    log_path = os.path.join(settings.home, 'logs', f'{settings.pipeline_name}-{stamp}.log')
    with console.Console(args.verbose, log_path) as terminal:
        out = terminal.out
        out.write(f'petpark: pipeline {settings.pipeline_name!r} on {settings.input_base}\n'
                  f'  home {settings.home}\n')
        if not args.verbose:
            out.write(f'  full log {log_path}\n')
        from petpark.pipeline.inspection import progress, summary  # heavy, after output is redirected
        from petpark.pipeline.ops import run_lock
        from petpark.pipeline.runners import local as local_runner
        pipeline = local_runner.local_pipeline(settings)
        watch = progress.RunProgress(pipeline.metadata_connection_config, settings.pipeline_name,
                                     [node.id for node in pipeline.components], out)
        try:
            with watch:
                local_runner.run(settings, pipeline)
        except run_lock.RunInProgress as e:
            out.write(f'  x {e}\n')
            return 1
        except Exception as e:  # report which component failed and why, then exit non-zero
            out.write(f'  x {watch.failed_node or "pipeline"} FAILED: {type(e).__name__}: {e}\n')
            if not args.verbose:
                out.write(f'  full log {log_path}\n')
            return 1
        out.write('\n' + '\n'.join(summary.describe(
            summary.latest_run(settings.metadata_connection(), settings.pipeline_name))) + '\n')
    return 0


def _predict(args: argparse.Namespace) -> int:
    from petpark.serving import client
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:
        raise ValueError(f'No such image file: {missing[0]}')
    try:
        predictions = client.predict_files(args.server, args.images, args.grpc, args.model)
    except (client.ServerError, OSError) as e:
        print(f'petpark: {args.server}: {e}', file=sys.stderr)
        return 1
    for path, prediction in zip(args.images, predictions):
        print(f'{path}\t{prediction.label}\t{prediction.probability:.3f}')
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.action not in ('list', 'history') and not args.version:
        raise ValueError(f'`petpark models {args.action}` needs a VERSION (see `petpark models list`)')
    if args.action not in ('approve', 'reject') and (args.by or args.note or args.reason):
        raise ValueError(f'--by, --note and --reason are for `petpark models approve|reject`, not {args.action}')
    if args.action == 'approve' and args.reason:
        raise ValueError('an approval takes --note TEXT (why it is fit for stable), not --reason')
    if args.action == 'reject' and args.note:
        raise ValueError('a rejection takes --reason TEXT, not --note')
    settings = Settings.from_env({'home': args.home, 'profile': args.profile}, check_data_root=False)
    from petpark.pipeline.inspection import registry  # MLMD only: no TensorFlow
    if args.action == 'list':
        found = registry.records(settings)
        result = [r.as_json() for r in found] if args.json else registry.list_lines(found)
    elif args.action == 'show':
        found = registry.find(settings, args.version)
        result = found.as_json() if args.json else registry.show_lines(found)
    elif args.action == 'history':
        decided = registry.history(settings, args.version)
        result = [d.as_json() for d in decided] if args.json else registry.history_lines(decided)
    elif args.action in ('approve', 'reject'):
        from petpark.pipeline.release import decisions, rollout
        kind = decisions.APPROVAL if args.action == 'approve' else decisions.REJECTION
        decided = rollout.record_decision(settings, kind, args.version, by=args.by,
                                          reason=args.note if kind == decisions.APPROVAL else args.reason)
        result = decided.as_json() if args.json else [decisions.summary(decided)]
    else:
        tree = registry.lineage_tree(settings, args.version)
        result = tree if args.json else registry.lineage_lines(tree)
    print(json.dumps(result, indent=1, default=str) if args.json else '\n'.join(result))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from petpark.pipeline.release import rollout
    if args.rollback and args.version is not None:
        raise ValueError('--rollback chooses the version (the previous approved one): give it without --version')
    if not args.rollback and (args.label is None or args.version is None):
        raise ValueError('`petpark promote` needs --label and --version (or --rollback)')
    if args.force and not (args.reason or '').strip():
        raise ValueError('--force needs --reason TEXT: an override is recorded with why')
    settings = Settings.from_env({'home': args.home, 'model_name': args.model})
    paths = rollout.Paths.of(settings, args.config, args.model_dir, args.base_path)
    if args.rollback:
        if args.force:
            raise ValueError('--rollback goes back to an approved version: it takes no --force')
        lines = rollout.rollback(settings, args.label or rollout.GATED_LABEL, by=args.by, reason=args.reason,
                                 paths=paths)
    else:
        lines = rollout.promote(settings, args.label, args.version, by=args.by, reason=args.reason,
                                force=args.force, paths=paths)
    print('\n'.join(lines))
    return 0


def _explain(args: argparse.Namespace) -> int:
    settings = Settings.from_env({'home': args.home, 'profile': args.profile}, check_data_root=False)
    from petpark.pipeline import explain  # no TensorFlow until the images are checked
    summary = explain.explain(settings, args.images, args.version, args.out, args.steps)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    for row in summary['images']:
        print(f"{row['image']}\t{row['label']}\t{row['score']:.3f}\t{row['overlay']}")
    print(f"version {summary['version']}, Integrated Gradients ({summary['steps']} steps): {summary['summary_file']}")
    return 0


def _report(args: argparse.Namespace) -> int:
    settings = Settings.from_env({'home': args.home, 'profile': args.profile}, check_data_root=False)
    if not settings.metadata and not os.path.isfile(settings.metadata_path):
        raise ValueError(f'No metadata store at {settings.metadata_path}: nothing has run in this home yet')
    log_path = os.path.join(settings.home, 'logs', 'report.log')
    with console.Console(False, log_path) as terminal:
        where = declared.masked_url(settings.metadata) if settings.metadata else settings.metadata_path
        terminal.out.write(f'petpark report: notebooks against {where} (log {log_path})\n')
        from petpark.pipeline.inspection import analysis, reports  # TFDV and TFMA: heavy, after output is redirected
        reports.render(settings, args.notebook or analysis.NOTEBOOKS, lambda line: terminal.out.write(line + '\n'))
    return 0


def _settings(args: argparse.Namespace) -> int:
    if args.markdown:
        print(declared.markdown_table(), end='')
        return 0
    current = Settings.from_env({'profile': args.profile}, check_data_root=False)
    for group, description, members in declared.groups():
        print(f'{group}: {description}')
        for item in members:
            value = current.value(item.name)
            default = declared.absolute(item.default) if item.kind == 'path' else item.default
            marker = '' if value == default else '   (changed)'
            print(f'  {item.env:<36} {json.dumps(item.shown(value))}{marker}')
    return 0


def moment(text: str) -> int:
    """A time on the command line as epoch seconds: ISO 8601 (UTC unless it says otherwise), epoch
    seconds, or relative to now: -30m, -2h, -1d."""
    text = text.strip()
    units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}
    try:
        if text.startswith('-') and text[-1:] in units:
            return int(datetime.datetime.now(datetime.timezone.utc).timestamp() - float(text[1:-1]) * units[text[-1]])
        if text.replace('.', '', 1).isdigit():
            return int(float(text))
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected ISO 8601 (2026-12-07T10:00), epoch seconds or -30m/-2h/-1d, '
                                         f'got {text!r}') from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp())


def _canary(args: argparse.Namespace, settings, out) -> int:
    from petpark.monitoring import canary
    version = None
    if args.version is not None:
        if not args.version.isdigit():
            raise ValueError(f'--version names the canary version, a number; got {args.version!r}')
        version = int(args.version)
    if args.serve is not None:
        return canary.serve(settings, args.serve, version, log=lambda line: out.write(line + '\n'))
    if args.json:
        document = canary.evaluate(settings, args.since, args.until, args.last, version)
        if not args.no_record:
            document['decision'] = canary.record(settings, document)
        out.write(canary.as_json(document).decode())
    else:
        document = canary.run(settings, args.since, args.until, args.last, version, keep=not args.no_record,
                              log=lambda line: out.write(line + '\n'))
    return canary.EXIT_CODES[document['verdict']]


def _monitor(args: argparse.Namespace) -> int:
    if args.last is not None and (args.since is not None or args.until is not None):
        raise ValueError('--last counts frames back from the newest: give it alone, or --since/--until')
    if args.last is not None and args.last < 1:
        raise ValueError(f'--last must be at least 1, got {args.last}')
    if args.every is not None and (args.last is not None or args.since is not None or args.until is not None):
        raise ValueError('--every checks the last SECONDS each time: give it without --since/--until/--last')
    if args.metrics_port is not None and args.every is None:
        raise ValueError('--metrics-port exposes the gauges of a running schedule: give it with --every')
    if args.check != 'canary' and (args.serve is not None or args.no_record):
        raise ValueError('--serve and --no-record are for `petpark monitor canary`')
    if args.check == 'canary' and args.every is not None:
        raise ValueError('`petpark monitor canary` judges every mirrored request so far: for a rollout controller '
                         'that polls, give --serve [HOST:]PORT instead of --every')
    settings = Settings.from_env({
        'home': args.home, 'profile': args.profile, 'monitor_log_dir': args.log_dir,
        'monitor_prometheus_url': args.prometheus, 'monitor_alertmanager_url': args.alertmanager,
        'monitor_webhook_url': args.webhook, 'monitor_review_dir': args.review_dir, 'monitor_retrain': args.retrain},
        check_data_root=False)
    with console.Console(args.verbose, os.path.join(settings.home, 'logs', 'monitor.log')) as terminal:
        if args.check == 'canary':
            return _canary(args, settings, terminal.out)
        if args.every is not None:
            from petpark.monitoring import exporter
            return exporter.run_schedule(settings, args.every, args.metrics_port, args.version,
                                         log=lambda line: terminal.out.write(line + '\n'))
        from petpark.monitoring import monitor  # TFDV and TensorFlow: after output is redirected
        document = monitor.run_window(settings, monitor.WindowSpec(args.since, args.until, args.last, args.version),
                                      log=lambda line: terminal.out.write(line + '\n'))
        if args.json:
            terminal.out.write(json.dumps(document, indent=1, default=str) + '\n')
    return monitor.EXIT_CODES[document['verdict']]


def _camera(args: argparse.Namespace) -> int:
    from petpark.serving.camera import loop  # PyAV, onnxruntime or gRPC: only when a camera loop runs
    return loop.run(args)


def _airflow(args: argparse.Namespace) -> int:
    from petpark.pipeline.ops import airflow as airflow_ops
    settings = Settings.from_env({'home': args.home}, check_data_root=False)
    deployment = airflow_ops.Deployment(settings)
    if args.action == 'up':
        _default_data(settings)
        deployment.up()
        print(f'export AIRFLOW_HOME={deployment.home} PATH={deployment.bin}:$PATH   # for airflow and tfx commands')
    elif args.action == 'down':
        deployment.down()
    else:
        print('\n'.join(deployment.status()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='petpark', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)

    synth = commands.add_parser('synth', help='write the synthetic pet-park dataset')
    synth.add_argument('--out', required=True, help='output folder (class folders + metadata.csv)')
    synth.add_argument('--count', type=int, required=True, help='number of images')
    synth.add_argument('--seed', type=int, default=0, help='seed (same seed, same images)')
    synth.set_defaults(func=_synth)

    run = commands.add_parser('run', help='run the whole pipeline locally (Beam DirectRunner)',
                              description='Settings come from PETPARK_* environment variables; '
                                          'flags override them. See README for every setting.')
    run.add_argument('--profile', choices=list(PROFILES),
                     help="named defaults (PETPARK_PROFILE): 'demo' (synthetic frames) or 'real' (the Kaggle photos)")
    run.add_argument('--data-root', help='input images (PETPARK_DATA_ROOT)')
    run.add_argument('--home', help='pipeline root, MLMD and serving directory (PETPARK_HOME)')
    run.add_argument('--input-pattern', help='glob under the data root (PETPARK_INPUT_PATTERN)')
    run.add_argument('--backbone', choices=training_config.BACKBONES, help='PETPARK_BACKBONE')
    run.add_argument('--backbone-weights', help="PETPARK_BACKBONE_WEIGHTS: the backbone's local .h5 (sha256-checked)")
    run.add_argument('--tune', action=argparse.BooleanOptionalAction, default=None,
                     help='run the KerasTuner search (PETPARK_TUNE)')
    run.add_argument('--set', action='append', metavar='NAME=VALUE',
                     help=f"any other setting by name: {', '.join(declared.DECLARED)} (`petpark settings` "
                          'lists them with their values)')
    run.add_argument('--verbose', action='store_true', help='show TF/absl/Beam logs instead of a log file')
    run.set_defaults(func=_run)

    settings_command = commands.add_parser(
        'settings', help='every setting (PETPARK_* variable) by group, with its value here',
        description='Prints each setting, grouped, with the value the environment gives it; --markdown prints the '
                    'table of docs/settings.md, generated from the same declarations (pipeline/settings.py).')
    settings_command.add_argument('--profile', choices=list(PROFILES), help='PETPARK_PROFILE')
    settings_command.add_argument('--markdown', action='store_true', help="docs/settings.md's table")
    settings_command.set_defaults(func=_settings)

    # light: no TensorFlow import until used (edge_runtime never imports it)
    from petpark.serving import edge_runtime, main as serving_main, promote
    serve = commands.add_parser('serve', help="serve pushed models over TF Serving's REST and gRPC APIs")
    serving_main.add_flags(serve)
    serve.set_defaults(func=serving_main.serve)

    predict = commands.add_parser('predict', help='classify image files with a running model server')
    predict.add_argument('--server', required=True, metavar='HOST:PORT', help='REST port, or gRPC port with --grpc')
    predict.add_argument('--grpc', action='store_true', help='use the gRPC API instead of REST')
    predict.add_argument('--model', default='petpark', help='served model name')
    predict.add_argument('images', nargs='+', metavar='IMAGE')
    predict.set_defaults(func=_predict)

    edge = commands.add_parser('edge-predict', help='classify images and video frames with an exported ONNX '
                                                    'model, without TensorFlow', description=edge_runtime.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    edge_runtime.add_flags(edge)
    edge.set_defaults(func=edge_runtime.run)

    promote = commands.add_parser('promote', help='move a version label (stable/canary) in models.config, by the '
                                                  'release rules, recorded in MLMD',
                                  description=promote.__doc__ + '\nThe release rules (pipeline/release/rollout.py): '
                                  '`stable` needs an approval of the version (`petpark models approve`; '
                                  'PETPARK_RELEASE_REQUIRE_APPROVAL=false turns that off) and no FAIL as its latest '
                                  'canary verdict; --force --reason overrides, recorded as an override. Every move is '
                                  'a decision in MLMD (`petpark models history`).',
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    promote.add_argument('--label', help='e.g. stable or canary (with --rollback: default stable)')
    promote.add_argument('--version', type=int, help='version folder name')
    promote.add_argument('--rollback', action='store_true',
                         help='move the label (stable) back to the previous version it named that is approved')
    promote.add_argument('--by', help='who decides (default: the login name)')
    promote.add_argument('--reason', help='why (required with --force)')
    promote.add_argument('--force', action='store_true', help='move `stable` although the rules refuse (needs --reason; '
                                                              'recorded as an override)')
    promote.add_argument('--config', help='models.config (default: <home>/serving/models.config)')
    promote.add_argument('--model', help='model name (default: PETPARK_MODEL_NAME)')
    promote.add_argument('--model-dir', help='where the versions are on this machine (default: <home>/serving/<model>)')
    promote.add_argument('--base-path', help='the model path as the server sees it, for a new entry '
                                             '(e.g. /models/petpark in the container; default: --model-dir)')
    promote.add_argument('--home', help='PETPARK_HOME')
    promote.set_defaults(func=_promote)

    models = commands.add_parser('models', help='the registry: pushed versions, their facts, lineage and decisions, '
                                                'from MLMD',
                                 description='list/show: every pushed version with its metrics, worst slice, blessing '
                                             'and thresholds, serving check, hyperparameters, data, schema, code version, '
                                             'labels (models.config), edge export, model card, certification and canary '
                                             'verdict, read from MLMD. lineage: the artifacts behind a version, then its '
                                             'decisions, monitoring windows and the retraining they started. approve / '
                                             'reject: certify a version for stable (--by NAME with --note TEXT / '
                                             '--reason TEXT), recorded in MLMD with its evidence. history: every '
                                             'approval, rejection, canary verdict, promotion and rollback.')
    models.add_argument('action', choices=['list', 'show', 'lineage', 'approve', 'reject', 'history'])
    models.add_argument('version', nargs='?', help='the pushed version (show, lineage, approve, reject; history: only it)')
    models.add_argument('--by', help='approve/reject: who decides')
    models.add_argument('--note', help='approve: why the version is fit for stable')
    models.add_argument('--reason', help='reject: why not')
    models.add_argument('--json', action='store_true', help='JSON instead of a table')
    models.add_argument('--home', help='PETPARK_HOME')
    models.add_argument('--profile', choices=list(PROFILES), help='PETPARK_PROFILE (its home)')
    models.set_defaults(func=_models)

    explain = commands.add_parser(
        'explain', help="why the served model scored each image so: score and saliency overlay (PNG), no server",
        description='Per image: the served version\'s score (its serving_image_bytes signature) and a saliency '
                    'overlay by Integrated Gradients on its SavedModel (serving_pixels signature, from a blurred copy '
                    'of the photo), written to --out (default <home>/explanations/<model>/<version>/) with '
                    'explanations.json. The version: --version, else the one labelled stable, else the newest pushed.')
    explain.add_argument('images', nargs='+', metavar='IMAGE')
    explain.add_argument('--version', help='the pushed version (default: stable, else the newest)')
    explain.add_argument('--out', help='folder for the overlays and explanations.json')
    explain.add_argument('--steps', type=int, default=32, help='Integrated Gradients steps (default 32)')
    explain.add_argument('--json', action='store_true', help='print the summary as JSON')
    explain.add_argument('--home', help='PETPARK_HOME')
    explain.add_argument('--profile', choices=list(PROFILES), help='PETPARK_PROFILE (its home)')
    explain.set_defaults(func=_explain)

    report = commands.add_parser('report', help="render the analysts' notebooks to HTML under <home>/reports/",
                                 description='Executes notebooks/data_validation.ipynb and notebooks/model_analysis.ipynb '
                                             'against the runs recorded in MLMD under PETPARK_HOME and writes '
                                             '<home>/reports/<notebook>.html, for readers without Jupyter.')
    report.add_argument('--notebook', action='append', choices=['data_validation', 'model_analysis'],
                        help='only this notebook (repeatable; default: both)')
    report.add_argument('--home', help='PETPARK_HOME')
    report.add_argument('--profile', choices=list(PROFILES), help='PETPARK_PROFILE (its home)')
    report.set_defaults(func=_report)

    monitor = commands.add_parser(
        'monitor', help="check a window of served frames against the version's baseline (drift, skew, health)",
        description='Reads the finished request logs of a window, computes each frame\'s features with the '
                    'ingestion component\'s functions, validates them with TFDV against the served version\'s '
                    'MonitoringBaseline (schema in SERVING, skew against training, drift against the previous '
                    'accepted window, prediction drift), estimates accuracy without labels, reads health from '
                    'Prometheus, writes an HTML and a JSON report recorded in MLMD, and alerts on a breach. '
                    'Exit status: 0 PASS, 1 BREACH, 3 INCONCLUSIVE (too few frames, or no baseline). '
                    '`petpark monitor canary` judges the `canary` version against `stable` on the requests '
                    '`petpark serve --canary_mirror_rate` mirrored (flipped decisions, scores, errors, latency), '
                    'records the verdict in MLMD and exits 0 PASS, 1 FAIL, 3 INCONCLUSIVE (too few requests).')
    monitor.add_argument('check', nargs='?', choices=['canary'],
                         help='canary: judge the canary on mirrored requests instead of checking a window')
    monitor.add_argument('--since', type=moment, help='frames served from this time (ISO 8601 UTC, epoch, -2h)')
    monitor.add_argument('--until', type=moment, help='... up to (not including) this time')
    monitor.add_argument('--last', type=int, help='the last N frames instead of a time window')
    monitor.add_argument('--version', help='the served version (default: the newest pushed); with canary: the '
                                           'canary version (default: the one labelled canary)')
    monitor.add_argument('--log-dir', help='request logs (PETPARK_MONITOR_LOG_DIR; default <home>/request_logs)')
    monitor.add_argument('--prometheus', help='Prometheus URL for health (PETPARK_MONITOR_PROMETHEUS_URL)')
    monitor.add_argument('--alertmanager', help='Alertmanager URL (PETPARK_MONITOR_ALERTMANAGER_URL)')
    monitor.add_argument('--webhook', help='webhook URL when there is no Alertmanager (PETPARK_MONITOR_WEBHOOK_URL)')
    monitor.add_argument('--review-dir', help="export a breaching window's frames here (PETPARK_MONITOR_REVIEW_DIR)")
    monitor.add_argument('--retrain', choices=['none', 'airflow', 'local'], help='PETPARK_MONITOR_RETRAIN')
    monitor.add_argument('--json', action='store_true', help='also print the report as JSON')
    monitor.add_argument('--every', type=float, metavar='SECONDS',
                         help='run a window over the last SECONDS every SECONDS until SIGTERM/SIGINT; a failed window '
                              'is logged and retried with backoff (exit status 0)')
    monitor.add_argument('--metrics-port', metavar='[HOST:]PORT',
                         help="with --every: the monitor's gauges for Prometheus at /metrics (PORT alone binds "
                              '127.0.0.1; 0.0.0.0:PORT for a Prometheus elsewhere)')
    monitor.add_argument('--no-record', action='store_true', help='canary: judge without recording the verdict')
    monitor.add_argument('--serve', metavar='[HOST:]PORT',
                         help='canary: answer GET /verdict with the verdict so far as JSON (an Argo Rollouts web '
                              'metric), until stopped')
    monitor.add_argument('--home', help='PETPARK_HOME')
    monitor.add_argument('--profile', choices=list(PROFILES), help='PETPARK_PROFILE (its home)')
    monitor.add_argument('--verbose', action='store_true', help='show TF/TFDV logs')
    monitor.set_defaults(func=_monitor)

    from petpark.serving.camera import config as camera_config  # the standard library only
    camera = commands.add_parser(
        'camera', help='classify live camera streams: debounced cat/dog events, on the edge model or a model server',
        description=camera_config.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    camera_config.add_flags(camera)
    camera.set_defaults(func=_camera)

    airflow = commands.add_parser(
        'airflow', help='Airflow on this machine: PostgreSQL, LocalExecutor scheduler and webserver',
        description='up: start PostgreSQL (initialised into <home>/airflow/postgres), migrate Airflow\'s database, '
                    'start the scheduler and the webserver, recording their PIDs. down: stop them by those PIDs. '
                    'status: what runs, on which ports, and the last DAG runs. Run it from the Airflow '
                    'environment (`make airflow`): .venv-airflow/bin/petpark airflow up.')
    airflow.add_argument('action', choices=['up', 'down', 'status'])
    airflow.add_argument('--home', help='PETPARK_HOME')
    airflow.set_defaults(func=_airflow)
    return parser


def _warning_line(message, category, filename, lineno, line=None) -> str:
    """petpark's own warnings as one line; everyone else's as Python prints them."""
    if issubclass(category, declared.UnknownSettingWarning):
        return f'petpark: warning: {message}\n'
    return _python_format(message, category, filename, lineno, line)


_python_format = warnings.formatwarning


def main(argv: Optional[List[str]] = None) -> int:
    console.quiet_libraries()
    warnings.formatwarning = _warning_line
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f'petpark: error: {e}', file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`petpark models list | head`): nothing more to say
        return 141
    except OSError as e:  # an unwritable or impossible --home, a full disk: one line naming the file
        print(f'petpark: error: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
