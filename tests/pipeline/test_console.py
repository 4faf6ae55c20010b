"""Quiet output: progress lines on the terminal, everything else in the log file."""
import logging
import os

from absl import logging as absl_logging

from pipeline import console


def test_progress_lines_and_redirected_noise(tmp_path, capfd):
    log_path = str(tmp_path / 'logs' / 'run.log')
    absl = logging.getLogger('absl')
    absl_logging.set_verbosity(absl_logging.WARNING)
    with console.Console(verbose=False, log_path=log_path) as terminal:
        print('library chatter', flush=True)
        os.write(2, b'C++ warning\n')
        absl.info('Component %s is running.', 'Transform')
        absl.info('A cached execution %d is used.', 7)
        absl.info('Component %s is finished.', 'Transform')
        absl.info('Component %s is running.', 'Trainer')
        assert terminal.current_component == 'Trainer'
        terminal.out.write('summary line\n')
    out, err = capfd.readouterr()
    assert '> Transform ...' in out and 'cached' in out and 'summary line' in out
    assert '+ Transform' in out and '> Trainer ...' in out
    assert 'library chatter' not in out + err and 'C++ warning' not in out + err
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
