"""Every notebook in colabs/ runs top to bottom (in its quick mode) on the current API."""

import json
import os
import pathlib

import matplotlib
import pytest

matplotlib.use('Agg')

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / 'colabs').glob('*.ipynb'))


def code_cells(path):
  cells = json.loads(path.read_text())['cells']
  return [''.join(c['source']) for c in cells if c['cell_type'] == 'code']


def test_there_are_notebooks():
  assert {p.stem for p in NOTEBOOKS} >= {'quickstart', 'curvature_visualisation',
                                         'explanations'}


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch, tmp_path):
  monkeypatch.setenv('ROBUSTJAX_QUICK', '1')
  monkeypatch.setenv('TMPDIR', str(tmp_path))
  monkeypatch.chdir(ROOT / 'colabs')
  namespace = {'__name__': '__notebook__'}
  for i, source in enumerate(code_cells(path)):
    try:
      exec(compile(source, f'{path.name}[cell {i}]', 'exec'), namespace)  # pylint: disable=exec-used
    finally:
      import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
      plt.close('all')
