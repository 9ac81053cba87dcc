"""Every notebook in colabs/ runs top to bottom in a real Jupyter kernel (quick mode).

The kernel is the venv's own Python (a kernelspec written into the test's temporary
directory, so a ``python3`` kernel installed elsewhere on the machine is never picked
up). Workdirs, temporary files, IPython's profile and Jupyter's connection files all go
under pytest's ``tmp_path``: a test run leaves nothing in the repository or the system
temporary directory.
"""

import os
import pathlib
import tempfile
import warnings

from ipykernel import kernelspec
import nbclient
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'colabs').glob('*.ipynb'))
KERNEL = 'robustjax-test-venv'


def test_there_are_notebooks():
  assert {p.stem for p in NOTEBOOKS} >= {'quickstart', 'curvature_visualisation',
                                         'explanations'}


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_valid_with_ids_and_figures(path):
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # e.g. nbformat's MissingIDFieldWarning
    nb = nbformat.reads(path.read_text(encoding='utf-8'), as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
  assert (nb.nbformat, nb.nbformat_minor) >= (4, 5)
  assert all(cell.get('id') for cell in nb.cells)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(c.execution_count is not None for c in code), 'commit the executed notebook'
  errors = [o for c in code for o in c.outputs if o.output_type == 'error']
  assert not errors, errors
  figures = [o for c in code for o in c.outputs if 'image/png' in o.get('data', {})]
  assert figures, f'{path.name} was committed without its figures'


def _isolated_kernel_env(monkeypatch, tmp_path):
  """Points every place the kernel writes to under ``tmp_path``; returns the workroot."""
  jupyter = tmp_path / 'jupyter'
  # The venv's interpreter, whatever kernels are installed on the machine.
  kernelspec.write_kernel_spec(str(jupyter / 'kernels' / KERNEL),
                               overrides={'display_name': KERNEL})
  for name in ('tmp', 'ipython', 'runtime', 'work'):
    (tmp_path / name).mkdir()
  monkeypatch.setenv('JUPYTER_PATH', str(jupyter))
  monkeypatch.setenv('JUPYTER_RUNTIME_DIR', str(tmp_path / 'runtime'))
  monkeypatch.setenv('IPYTHONDIR', str(tmp_path / 'ipython'))
  monkeypatch.setenv('TMPDIR', str(tmp_path / 'tmp'))  # a fresh process reads it
  monkeypatch.setenv('ROBUSTJAX_WORKDIR', str(tmp_path / 'work'))
  monkeypatch.setenv('ROBUSTJAX_QUICK', '1')
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.delenv('MPLBACKEND', raising=False)  # the kernel's inline backend
  # A reader's kernel sees its real devices, not the 4 simulated ones of conftest.py.
  flags = os.environ.get('XLA_FLAGS', '').split()
  monkeypatch.setenv('XLA_FLAGS', ' '.join(
      f for f in flags if not f.startswith('--xla_force_host_platform_device_count')))
  return tmp_path / 'work'


def _listing(directory):
  return {p.name for p in pathlib.Path(directory).iterdir()}


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_a_kernel_and_leaves_nothing_behind(path, monkeypatch, tmp_path):
  system_tmp = tempfile.gettempdir()  # cached by this process before the monkeypatch
  before_tmp, before_colabs = _listing(system_tmp), _listing(ROOT / 'colabs')
  workroot = _isolated_kernel_env(monkeypatch, tmp_path)
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=600,
                                   resources={'metadata': {'path': str(ROOT / 'colabs')}})
  client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
  figures = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
             if 'image/png' in o.get('data', {})]
  assert figures, 'the notebook drew no figure'
  if path.stem in ('quickstart', 'explanations'):  # they train from configs
    written = list((workroot / 'quick' / path.stem).iterdir())
    assert written, 'the workdirs did not go under ROBUSTJAX_WORKDIR'
  assert _listing(ROOT / 'colabs') == before_colabs
  new = {n for n in _listing(system_tmp) - before_tmp if 'robustjax' in n}
  assert not new, f'left in {system_tmp}: {sorted(new)}'
