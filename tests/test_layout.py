"""docs/layout.md lists every file of the product folders, and nothing that is not there."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ('pipeline', 'components', 'modules', 'schemas', 'serving', 'monitoring', 'benchmarks')
KINDS = ('.py', '.md', '.txt', '.pbtxt', '.config', '.yml', '.yaml', '.json', '.rules', '.service', '.toml')


def tree():
    found = set()
    for folder in FOLDERS:
        for root, directories, files in os.walk(os.path.join(REPO, folder)):
            directories[:] = [d for d in directories if d != '__pycache__']
            for name in files:
                if name.endswith(KINDS) and name != '__init__.py':
                    found.add(os.path.relpath(os.path.join(root, name), REPO))
    return found


def test_the_layout_page_lists_the_tree():
    page = open(os.path.join(REPO, 'docs', 'layout.md')).read()
    listed = set(re.findall(r'^\| `([^`]+)` \|', page, re.M))
    files = {path for path in listed if not path.endswith('/')}
    assert sorted(tree() - files) == [], 'files missing from docs/layout.md'
    assert sorted(path for path in listed if not os.path.exists(os.path.join(REPO, path))) == [], \
        'docs/layout.md lists paths that do not exist'
