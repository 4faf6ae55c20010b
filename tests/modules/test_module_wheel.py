"""The user-module wheel TFX builds from modules/ stands on its own: installed alone, with
nothing of this repository importable, its entry points import and its config parses."""
import json
import os
import site
import subprocess
import sys

import pytest
from tfx.components.util import udf_utils

from petpark.modules import training_config
from petpark.pipeline import factory

ENTRY_POINTS = {'Transform': ('preprocessing.py', 'preprocessing_fn'), 'Tuner': ('tuner.py', 'tuner_fn'),
                'Trainer': ('trainer.py', 'run_fn')}

ISOLATED = '''
import importlib.util, json, sys
sys.path[:0] = [{target!r}]
sys.path.append({site_packages!r})  # the libraries, without the .pth hook that maps petpark to the repo
assert importlib.util.find_spec('petpark') is None, 'the repository is importable'
module = importlib.import_module({module!r})
entry = getattr(module, {function!r})
config = module.training_config.TrainingConfig.from_custom_config(json.loads({config!r}), {component!r})
print(json.dumps({{'entry': callable(entry), 'file': module.__file__,
                  'petpark': sorted(m for m in sys.modules if m.startswith('petpark')),
                  'sections': sorted(k for k, v in vars(config).items() if v is not None)}}))
'''


@pytest.mark.parametrize('component', sorted(ENTRY_POINTS))
def test_module_wheel_imports_alone(component, tmp_path):
    file_name, function = ENTRY_POINTS[component]
    module_file = factory.user_code(file_name[:-3], function, 'wheel')['module_file']
    wheel, module_path = udf_utils.package_user_module_file(component, module_file,
                                                            str(tmp_path / 'pipeline_root'))
    target = str(tmp_path / 'installed')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--target', target, wheel],
                   check=True, timeout=300)
    from tests.pipeline_fixtures import custom_config
    script = ISOLATED.format(target=target, site_packages=site.getsitepackages()[0],
                             module=module_path.split('@')[0], function=function,
                             config=json.dumps(custom_config(component)), component=component)
    result = subprocess.run([sys.executable, '-S', '-c', script], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found['entry'] and found['file'].startswith(target)
    assert found['petpark'] == []
    assert found['sections'] == sorted(training_config.COMPONENT_SECTIONS[component])
    assert not os.path.exists(os.path.join(target, 'petpark'))
