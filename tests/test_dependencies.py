"""Declared dependencies are used: every runtime dependency is imported by the package,
its configs or its notebooks, and every test-only package is declared in the test extra."""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())

# Distribution name -> import name, where they differ.
IMPORT_NAMES = {'orbax-checkpoint': 'orbax', 'tensorflow-datasets': 'tensorflow_datasets',
                'ml-collections': 'ml_collections', 'absl-py': 'absl',
                'scikit-learn': 'sklearn', 'pillow': 'PIL', 'pytest-xdist': 'xdist'}
# Needed at run time without a direct import, and why.
INDIRECT = {
    'pillow': 'tfds.data_source decodes PNG/JPEG images with Pillow (no TensorFlow)',
    'pytest-xdist': 'the README test command runs pytest -n 2',
    'ipykernel': 'tests/test_colabs.py launches the notebooks in an ipykernel',
}


def _name(requirement):
  return re.split(r'[<>=!~\[; ]', requirement, maxsplit=1)[0].strip()


def _imports(paths):
  found = set()
  for path in paths:
    text = path.read_text(encoding='utf-8')
    # Lines of .py files, or of notebook sources (JSON strings start with '"').
    found |= set(re.findall(r'^[\s"]*(?:import|from)\s+([A-Za-z_][\w]*)', text, re.M))
    found |= set(re.findall(r'^[\s"]*import\s+[\w.]+\s*,\s*([A-Za-z_]\w*)', text, re.M))
  return found


def _files(*dirs, suffixes=('.py', '.ipynb')):
  return [p for d in dirs for p in (ROOT / d).rglob('*') if p.suffix in suffixes]


def test_every_runtime_dependency_is_imported():
  used = _imports(_files('robustjax', 'configs', 'colabs'))
  unused = []
  for requirement in PYPROJECT['project']['dependencies']:
    name = _name(requirement)
    if name in INDIRECT:
      continue
    if IMPORT_NAMES.get(name, name.replace('-', '_')) not in used:
      unused.append(name)
  assert not unused, (f'declared in [project] dependencies but imported nowhere in the '
                      f'package, configs or notebooks: {unused}')


def test_every_test_extra_package_is_used_by_the_tests():
  used = _imports(_files('tests'))
  unused = [_name(r) for r in PYPROJECT['project']['optional-dependencies']['test']
            if _name(r) not in INDIRECT
            and IMPORT_NAMES.get(_name(r), _name(r).replace('-', '_')) not in used]
  assert not unused, f'declared in the test extra but unused by the tests: {unused}'


def test_packages_the_tests_import_are_declared():
  declared = {IMPORT_NAMES.get(_name(r), _name(r).replace('-', '_'))
              for r in (PYPROJECT['project']['dependencies']
                        + PYPROJECT['project']['optional-dependencies']['test'])}
  local = {'robustjax', 'configs', 'experiments', 'tests', '__future__'} | {
      p.stem for p in (ROOT / 'tests').glob('*.py')}  # conftest, shared test helpers
  used = _imports(_files('tests', suffixes=('.py',))) - set(sys.stdlib_module_names) - local
  assert used <= declared, f'imported by the tests but not declared: {sorted(used - declared)}'
