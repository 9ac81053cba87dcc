"""The README's Python example runs as written, and CI runs the README's test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()


def test_readme_python_examples_run():
  blocks = re.findall(r'```python\n(.*?)```', README, flags=re.S)
  assert blocks, 'README.md has no python example'
  for block in blocks:
    exec(compile(block, 'README.md', 'exec'), {'__name__': '__readme__'})  # pylint: disable=exec-used


def test_ci_runs_the_readme_test_command():
  marker = README.index('<!-- ci:test -->')
  command = re.search(r'```bash\n(.*?)```', README[marker:], flags=re.S).group(1).strip()
  assert 'pytest' in command and "pip install -e '.[test]'" in command
  assert 'ci:test' in (ROOT / '.ci' / 'run').read_text()
