"""petpark serve's flags, config reading and config-file watching."""
import argparse
import os
import subprocess
import sys
import time

import pytest

from petpark.serving import main, promote
from petpark.serving.model_store import ModelStore, Servable


def parse(*argv):
    parser = argparse.ArgumentParser()
    main.add_flags(parser)
    return parser.parse_args(argv)


def test_tf_serving_flag_defaults_and_forms():
    args = parse('--rest_api_port=8501', '--model_base_path', '/m')
    assert (args.port, args.rest_api_port, args.model_name, args.file_system_poll_wait_seconds) == (8500, 8501, 'default', 1.0)
    assert args.host == '127.0.0.1'


def test_tensorflow_parallelism_flags_size_the_thread_pools():
    script = ('import argparse; from petpark.serving import main; parser = argparse.ArgumentParser(); main.add_flags(parser); '
              'main.configure_tensorflow(parser.parse_args(["--tensorflow_intra_op_parallelism=1", '
              '"--tensorflow_inter_op_parallelism=3"])); import tensorflow as tf; '
              'print(tf.config.threading.get_intra_op_parallelism_threads(), '
              'tf.config.threading.get_inter_op_parallelism_threads())')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120, env=env,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ['1', '3']


def test_negative_thread_counts_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse('--tensorflow_inter_op_parallelism=-3')
    assert 'argument --tensorflow_inter_op_parallelism: must be 0 (as many as cores) or more, got -3' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse('--tensorflow_intra_op_parallelism=two')
    assert "argument --tensorflow_intra_op_parallelism: expected a number of threads, got 'two'" in capsys.readouterr().err


def test_config_from_flags_and_errors(tmp_path):
    config = main.read_config(parse('--model_name=pets', '--model_base_path', str(tmp_path)))
    assert config.model_config_list.config[0].name == 'pets'
    with pytest.raises(ValueError, match='Both --model_base_path and --model_config_file are empty'):
        main.read_config(parse())
    bad = tmp_path / 'bad.config'
    bad.write_text('model_config_list { oops')
    with pytest.raises(ValueError, match='Error parsing text-format tensorflow.serving.ModelServerConfig'):
        main.read_config(parse('--model_config_file', str(bad)))


def test_watcher_reloads_a_promoted_config_and_keeps_it_on_a_bad_edit(tmp_path):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    for version in (1, 2):
        os.makedirs(os.path.join(model_dir, str(version)))
        open(os.path.join(model_dir, str(version), 'saved_model.pb'), 'w').close()
    for _ in range(2):
        promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    args = parse('--model_config_file', config_path)
    store = ModelStore(main.read_config(args), lambda name, path, version: Servable())
    store.start(poll_seconds=0)
    watcher = main.ConfigWatcher(store, args)
    assert watcher.poll() == 'unchanged'
    time.sleep(0.01)
    promote.promote(config_path, 'petpark', model_dir, 'canary', 2)  # serve version 2 as well
    os.utime(config_path, (time.time() + 1, time.time() + 1))
    assert watcher.poll() == 'reloaded'
    assert sorted(r.version for r in store.status('petpark')) == [1, 2]
    with open(config_path, 'w') as f:
        f.write('not a config')
    os.utime(config_path, (time.time() + 2, time.time() + 2))
    assert watcher.poll().startswith('kept the previous config: Error parsing')
    assert store.resolve_label('petpark', 'stable') == 1


def test_the_limits_page_lists_every_serving_bound_with_its_default():
    import dataclasses
    import re
    from petpark.serving.limits import Limits
    page = open(os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'limits.md')).read()
    documented = dict(re.findall(r'^\| `--(\w+)` \| ([^|]+) \|', page, re.M))
    for field in dataclasses.fields(Limits):
        assert field.name in documented, field.name
        assert documented[field.name].split()[0] == f'{field.default:g}' if isinstance(field.default, float) \
            else documented[field.name].split()[0] == str(field.default), field.name
