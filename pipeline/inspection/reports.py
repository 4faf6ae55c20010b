"""`petpark report`: the analysts' notebooks executed headlessly and rendered to HTML.

Each notebook in notebooks/ runs in a fresh Python kernel with the caller's PETPARK_* settings
and is written to <home>/reports/<notebook>.html; a cell that fails stops that notebook with the
cell's error, and no HTML is left for it.
"""
import os
import re
from typing import Callable, List, Sequence

from petpark.pipeline.inspection import analysis
from petpark.pipeline.settings import REPO_ROOT, Settings
from petpark.serving import files

NOTEBOOK_DIR = os.path.join(REPO_ROOT, 'notebooks')
CELL_TIMEOUT_SECONDS = 1800


class NotebookFailed(ValueError):
    """A cell raised; the message names the notebook, the cell and the error."""


def render(settings: Settings, names: Sequence[str] = analysis.NOTEBOOKS,
           log: Callable[[str], None] = print) -> List[str]:
    """Executes and renders each notebook; returns the HTML paths."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter
    folder = os.path.join(settings.home, 'reports')
    os.makedirs(folder, exist_ok=True)
    os.environ.update(PETPARK_HOME=settings.home, TF_CPP_MIN_LOG_LEVEL='2')  # the kernel inherits them
    written = []
    for name in names:
        source = os.path.join(NOTEBOOK_DIR, f'{name}.ipynb')
        if not os.path.isfile(source):
            raise ValueError(f'No notebook {source}; known: {", ".join(analysis.NOTEBOOKS)}')
        notebook = nbformat.read(source, as_version=4)
        log(f'Executing {name}.ipynb ...')
        try:
            NotebookClient(notebook, timeout=CELL_TIMEOUT_SECONDS, kernel_name='python3',
                           resources={'metadata': {'path': folder}}).execute()
        except CellExecutionError as e:
            last_line = re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines()[-1]
            raise NotebookFailed(f'{name}.ipynb failed: {last_line}') from None
        html, _ = HTMLExporter().from_notebook_node(notebook)
        target = os.path.join(folder, f'{name}.html')
        files.write_text_atomically(target, html)
        log(f'Wrote {target}')
        written.append(target)
    return written
