"""Quiet output: the terminal gets what the run writes to `out`, everything else goes to the log."""
import os

from absl import logging as absl_logging

from petpark.pipeline import console


def test_terminal_lines_and_redirected_noise(tmp_path, capfd):
    log_path = str(tmp_path / 'logs' / 'run.log')
    absl_logging.set_verbosity(absl_logging.WARNING)
    with console.Console(verbose=False, log_path=log_path) as terminal:
        print('library chatter', flush=True)
        os.write(2, b'C++ warning\n')
        absl_logging.info('Component Transform is running.')
        terminal.out.write('  > Transform ...\n')
        terminal.out.write('summary line\n')
    out, err = capfd.readouterr()
    assert '> Transform ...' in out and 'summary line' in out
    assert 'library chatter' not in out + err and 'C++ warning' not in out + err
    assert 'Component Transform is running' not in out + err
    logged = open(log_path).read()
    assert 'library chatter' in logged and 'C++ warning' in logged
    print('after', flush=True)
    assert 'after' in capfd.readouterr().out  # descriptors restored
    assert absl_logging.get_verbosity() == absl_logging.WARNING  # and absl's level


def test_verbose_leaves_output_on_the_terminal(tmp_path, capfd):
    with console.Console(verbose=True, log_path=str(tmp_path / 'unused.log')):
        print('visible', flush=True)
    assert 'visible' in capfd.readouterr().out
    assert not os.path.exists(tmp_path / 'unused.log')
