"""setup.py declares every distribution the code imports directly, in the extra of the part
that imports it; the petpark namespace claims no generic top-level names."""
import ast
import functools
import importlib.metadata
import importlib.util
import os
import re
import site
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# folder -> the requirement groups its imports may come from
PARTS = {'pipeline': ['', 'airflow', 'notebooks'], 'components': [''], 'modules': [''], 'schemas': [''],
         'serving': ['', 'serving', 'edge'], 'monitoring': ['']}
# distributions of the Airflow environment (.venv-airflow) that the main environment does not have
AIRFLOW_ONLY = {'psycopg2': 'psycopg2-binary', 'airflow': 'apache-airflow'}


def imported_modules(folder):
    """Absolute imports of third-party modules anywhere under `folder`, with a file that shows each."""
    found = {}
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(root, name)
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for module in names:
                    top = module.split('.')[0]
                    beside = os.path.isfile(os.path.join(root, f'{top}.py'))  # copied together (edge box, Trainer)
                    if top not in sys.stdlib_module_names and top != 'petpark' and not beside:
                        found.setdefault(module, os.path.relpath(path, REPO))
    return found


@functools.lru_cache()
def owners():
    """{file path relative to site-packages: distribution name} over every installed distribution."""
    result = {}
    for dist in importlib.metadata.distributions():
        name = normalize(dist.metadata['Name'])
        result.update((os.path.normpath(str(file)), name) for file in dist.files or [])
    return result


def normalize(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def distribution_of(module):
    """The distribution that installed `module`'s file (for a namespace package, its first file)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f'{module} is not importable'
    site_packages = site.getsitepackages()[0]
    if spec.origin and os.path.isfile(spec.origin):
        files = [spec.origin]
    else:
        folder = list(spec.submodule_search_locations)[0]
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith('.py'))
    return owners()[os.path.normpath(os.path.relpath(files[0], site_packages))]


def declared():
    """{extra ('' for install_requires): {distribution}} from petpark's installed metadata."""
    groups = {}
    for requirement in importlib.metadata.requires('petpark'):
        name = normalize(re.match(r'[A-Za-z0-9_.-]+', requirement).group(0))
        extra = re.search(r'extra == "([^"]+)"', requirement.replace("'", '"'))
        groups.setdefault(extra.group(1) if extra else '', set()).add(name)
    return groups


@pytest.mark.parametrize('folder', sorted(PARTS))
def test_every_direct_import_is_declared(folder):
    allowed = set().union(*(declared().get(group, set()) for group in PARTS[folder]))
    missing = {}
    for module, where in imported_modules(folder).items():
        top = module.split('.')[0]
        owner = AIRFLOW_ONLY[top] if top in AIRFLOW_ONLY and not importlib.util.find_spec(top) else distribution_of(module)
        if owner not in allowed:
            missing[owner] = f'{module} (imported in {where})'
    assert not missing, f'undeclared in setup.py for {folder}/: {missing}'


def test_what_the_default_pipeline_starts_needs_only_core_requirements():
    """The ServingValidator starts `petpark serve`: every serving module but the clients and the
    edge runtime imports only install_requires, so a plain `pip install petpark` can serve."""
    core = declared()['']
    optional = {'client.py', 'edge_runtime.py'}
    missing = {}
    for module, where in imported_modules('serving').items():
        if os.path.basename(where) not in optional and distribution_of(module) not in core:
            missing[distribution_of(module)] = f'{module} (imported in {where})'
    assert not missing, f'serving needs these beyond install_requires: {missing}'


def test_installs_under_one_namespace():
    """Outside the repository, petpark's folders import as petpark.* and under no generic name."""
    script = ('import importlib.util, petpark.pipeline\n'
              'print(petpark.pipeline.__file__)\n'
              'print([n for n in ("pipeline", "components", "modules", "schemas", "serving", "monitoring")'
              ' if importlib.util.find_spec(n)])')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd='/', timeout=60)
    assert result.returncode == 0, result.stderr
    location, generic = result.stdout.strip().splitlines()
    assert location == os.path.join(REPO, 'pipeline', '__init__.py') and generic == '[]'


def pins(path):
    """{distribution: version} of a requirements file's `name==version` lines."""
    lines = [line.split('==') for line in open(os.path.join(REPO, path)) if '==' in line and not line.startswith('#')]
    return {normalize(name): version.strip() for name, version in lines}


def test_the_airflow_environment_keeps_the_tfx_stack_of_the_main_lock():
    """Installing Airflow moves none of the TFX stack: its constraints are the main lock's pins, and
    the Airflow lock resolved with them has the same versions."""
    main, airflow, constraints = pins('requirements/lock.txt'), pins('requirements/airflow-lock.txt'), \
        pins('requirements/airflow-constraints.txt')
    stack = {name for name in constraints if not name.startswith('opentelemetry')}
    assert {'tfx', 'tensorflow', 'apache-beam', 'tensorflow-model-analysis', 'protobuf'} <= stack
    assert {name: main[name] for name in stack} == {name: constraints[name] for name in stack}
    assert {name: airflow[name] for name in constraints} == constraints
    assert airflow['apache-airflow'] == '2.10.5' and {'psycopg2-binary', 'pgserver'} <= set(airflow)


def test_the_beam_workers_requirements_are_the_locked_tfx():
    """What a staging Beam runner would install is the TFX the lock tested."""
    requirements = pins('pipeline/runners/beam_requirements.txt')
    assert requirements == {'tfx': pins('requirements/lock.txt')['tfx']}
