"""The reproduction study's smoke suite: one row of each kind, one seed, a few steps.

``python -m experiments.reproduce --suite=digits --quick --methods=...`` trains the
configs of a row of each kind the script handles (SOAR fine-tuned from the standard run,
a row changed from another config and evaluated in L2, CRT with its CRC certificate, a
certified-training row, ELLE with its controller and overfitting monitor) for 4 steps and
runs the whole evaluation pipeline on 16 test digits (AutoAttack and PGD-20, L2, CRC,
ARA, step costs), then writes RESULTS.md-style output. The numbers mean nothing; the
test checks that every row ran, that the aggregation holds what the report prints, and
that a second invocation resumes from the finished runs instead of training again.
Every config's train step is traced in tests/test_configs.py.
"""

import json
import os

import pytest

from experiments import reproduce


SMOKE_ROWS = 'soar,l2min,crt,ibp,elle'  # soar brings the standard row it starts from


@pytest.fixture(scope='module')
def smoke(tmp_path_factory, persistent_compilation_cache):
  # Methods sharing an architecture share compiled evaluation programs (the cache).
  del persistent_compilation_cache
  root = tmp_path_factory.mktemp('repro')
  out = root / 'out'
  summary = reproduce.main(['--suite=digits', '--quick', f'--methods={SMOKE_ROWS}',
                            f'--out={out}', f'--results={root / "RESULTS.md"}'])
  return root, out, summary


@pytest.mark.slow
def test_every_method_ran_and_is_reported(smoke):
  root, out, summary = smoke
  assert set(summary['table']) == set(SMOKE_ROWS.split(',')) | {'standard'}
  for name, row in summary['table'].items():
    assert 0.0 <= row['clean'][0] <= 1.0
    for key in ('linf/pgd/0.1', 'linf/autoattack/0.1'):
      # AutoAttack and PGD each measure robust points, so never above clean accuracy.
      assert row[key][0] <= row['clean'][0] + 1e-9, (name, key)
    assert row['attack_ara'][0] >= 0.0 and row['btr_ara'][0] >= 0.0
    assert row['step_cost'] > 0
  assert 'crc' in summary['table']['crt'] and 'crc' in summary['table']['ibp']
  assert 'l2/autoattack/0.5' in summary['table']['l2min']
  text = (root / 'RESULTS.md').read_text()
  for row in summary['table'].values():
    assert row['label'] in text
  with open(out / 'results.json', encoding='utf-8') as f:
    assert json.load(f)['quick'] is True
  for name in ('accuracy_vs_eps', 'robust_vs_clean', 'robust_vs_cost'):
    assert (root / 'results' / f'digits_{SMOKE_ROWS.replace(",", "-")}_{name}.png').exists()


@pytest.mark.slow
def test_a_second_run_resumes_without_training(smoke, monkeypatch):
  root, out, summary = smoke
  from robustjax import training  # pylint: disable=g-import-not-at-top

  def fail(*args, **kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(training, 'train_and_evaluate', fail)
  monkeypatch.setattr(reproduce, 'step_costs', lambda *a, **k: summary['step_seconds'])
  again = reproduce.main(['--suite=digits', '--quick', f'--methods={SMOKE_ROWS}',
                          f'--out={out}', '--results='])
  as_json = lambda t: json.loads(json.dumps(t))
  assert as_json(again['table']) == as_json(summary['table'])


def test_unknown_method_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    reproduce.main(['--suite=digits', '--methods=standard,lrr', f'--out={tmp_path}'])
  assert "unknown ['lrr']" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


def test_a_suite_names_the_rows_it_lacks_a_config_for():
  for dataset in ('digits', 'mnist', 'svhn', 'cifar10'):
    rows = reproduce._suite_rows(dataset)  # pylint: disable=protected-access
    ran = {m.name for m in reproduce._methods(dataset)}  # pylint: disable=protected-access
    missing = reproduce.missing_rows(dataset)
    want = [f'{m.name} (configs/{m.config}.py)' for m in rows
            if not os.path.exists(os.path.join(reproduce.ROOT, 'configs', f'{m.config}.py'))]
    assert missing == want
    assert ran | {w.split(' ')[0] for w in want} == {m.name for m in rows}
  assert not reproduce.missing_rows('digits')


def test_bounds_section_replaces_only_its_block(tmp_path):
  ms = lambda v: (v, 0.0)
  bounds = {'radii': [0.0, 0.5], 'crown': [ms(0.9), ms(0.4)], 'ibp': [ms(0.9), ms(0.1)],
            'crown_mean_radius': ms(0.3), 'ibp_mean_radius': ms(0.1),
            'crown_violations': 0, 'ibp_violations': 0, 'crc_global_mean': ms(0.5),
            'crc_local_mean': ms(0.55), 'crc_local_examples': 64, 'crc_local_improved': 7}
  table = {'crt': {'label': 'CRT (softplus MLP)', 'clean': ms(0.95), 'crc_radii': [0.0, 0.5],
                   'crc': [ms(0.95), ms(0.6)], 'crc_mean_radius': ms(0.7), 'bounds': bounds}}
  suite = reproduce.SUITES['digits']
  path = tmp_path / 'RESULTS.md'
  path.write_text('# head\n\nkept\n')
  reproduce.update_bounds_section(str(path), table, suite)
  first = path.read_text()
  begin, end = reproduce.markers('bounds:digits')
  assert first.startswith('# head\n\nkept\n') and begin in first and end in first
  assert '| CRT (softplus MLP) | 95.0 ± 0.0 | 60.0 ± 0.0 | 40.0 ± 0.0 | 10.0 ± 0.0 |' in first
  table['crt']['bounds'] = dict(bounds, crown=[ms(0.9), ms(0.45)])
  reproduce.update_bounds_section(str(path), table, suite)
  second = path.read_text()
  assert second.count(begin) == 1 and '45.0 ± 0.0' in second and '40.0 ± 0.0' not in second
  assert second.startswith('# head\n\nkept\n')


def test_a_suite_block_replaces_only_itself_and_keeps_its_bounds_block(tmp_path):
  path = tmp_path / 'RESULTS.md'
  d_begin, d_end = reproduce.markers('digits')
  f_begin, f_end = reproduce.markers('fashion_mnist')
  b_begin, b_end = reproduce.markers('bounds:digits')
  path.write_text(f'# title\n\n{d_begin}\nold digits\n{b_begin}\nbounds kept\n{b_end}\n'
                  f'{d_end}\n\n{f_begin}\nfashion kept\n{f_end}\n\ntail kept\n')
  ms = lambda v: (v, 0.0)
  suite = reproduce.SUITES['digits']
  row = {'label': 'standard', 'seeds': 1, 'clean': ms(0.9), 'attack_ara': ms(0.05),
         'btr_ara': ms(0.06), 'flags': {}}
  for e in suite['linf']:
    row[f'linf/pgd/{e:g}'], row[f'linf/autoattack/{e:g}'] = ms(0.5), ms(0.4)
  args = type('Args', (), {'quick': False})()
  reproduce.write_markdown(str(path), table={'standard': row}, suite_name='digits',
                           suite=suite, args=args, seeds=1, wall_s=60.0, figures=[])
  text = path.read_text()
  assert 'old digits' not in text and 'bounds kept' in text and 'fashion kept' in text
  assert text.startswith('# title\n') and text.rstrip().endswith('tail kept')
  assert text.count(d_begin) == 1 and text.index(b_begin) < text.index(d_end)
  # The PGD-20 - AutoAttack gap column: 50 - 40 = 10 points at every radius.
  assert '| standard | 90.0 ± 0.0 | 40.0 ± 0.0 |' in text and '| 10.0 |' in text
  # A --methods subset writes a block of its own and leaves the suite's whole table alone.
  args.methods = 'standard'
  reproduce.write_markdown(str(path), table={'standard': row}, suite_name='digits',
                           suite=suite, args=args, seeds=1, wall_s=60.0, figures=[])
  again = path.read_text()
  assert again.count(d_begin) == 1 and again.count(reproduce.markers('digits:standard')[0]) == 1
  assert text.split(d_begin)[1].split(d_end)[0] == again.split(d_begin)[1].split(d_end)[0]
  assert '--methods=standard' in again.split(reproduce.markers('digits:standard')[0])[1]


def test_a_reduced_autoattack_protocol_is_reported_on_its_own_points(tmp_path):
  # Fashion-MNIST's protocol: PGD-20 on the whole grid, AutoAttack (and PGD-20 again) on a
  # subset at the training radius; the gap and the orderings use the subset's PGD-20.
  suite = reproduce.SUITES['fashion_mnist']
  eps = reproduce.headline_eps(suite)
  assert eps == 0.1 and reproduce.aa_radii(suite, 'l2') == (1.58,)
  run = lambda clean, pgd, sub, aa: {
      'clean': clean, 'flags': {}, 'attack_ara': 0.05, 'btr_ara': 0.06,
      'linf': {'pgd': {str(e): pgd for e in suite['linf']}, 'autoattack': {'0.1': aa},
               'pgd_aa_subset': {'0.1': sub}}}
  methods = [m for m in reproduce._methods('fashion_mnist')  # pylint: disable=protected-access
             if m.name in ('standard', 'at')]
  results = {'standard': [run(0.9, 0.1, 0.08, 0.0), run(0.88, 0.1, 0.06, 0.02)],
             'at': [run(0.75, 0.7, 0.74, 0.70), run(0.77, 0.7, 0.72, 0.70)]}
  table = reproduce.aggregate(results, methods, suite, {'standard': 1.0, 'at': 3.0})
  assert table['at']['linf/autoattack/0.1'] == (0.70, 0.0)
  assert table['at']['linf/autoattack/0.05'][0] != table['at']['linf/autoattack/0.05'][0]
  path = tmp_path / 'RESULTS.md'
  args = type('Args', (), {'quick': False, 'methods': ''})()
  reproduce.write_markdown(str(path), table=table, suite_name='fashion_mnist', suite=suite,
                           args=args, seeds=2, wall_s=60.0, figures=[])
  text = path.read_text()
  # Columns: AA 0.1 | PGD-20 0.05 0.1 0.15 | PGD-20 - AA 0.1 (73 - 70 = 3.0 points for AT).
  assert '| AA 0.1 | PGD-20 0.05 | PGD-20 0.1 | PGD-20 0.15 | PGD-20 - AA 0.1 |' in text
  assert '| 70.0 ± 0.0 | 70.0 ± 0.0 | 70.0 ± 0.0 | 70.0 ± 0.0 | 3.0 |' in text
  assert 'AA 0.05' not in text and 'first 100 of those points' in text
  assert 'PGD-20 vs AutoAttack** at Linf eps=0.1' in text and 'at 3.0' in text


@pytest.mark.slow
def test_a_changed_config_refuses_the_cached_run(smoke, monkeypatch):
  """A finished run is reused only for the config it was trained from."""
  _, out, _ = smoke
  from robustjax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  load = reproduce.load_config

  def changed(method, *args, **kwargs):
    c = load(method, *args, **kwargs)
    c.optimizer.lr = 0.123
    return c

  monkeypatch.setattr(reproduce, 'load_config', changed)
  with pytest.raises(workdir_lib.WorkdirConflictError, match='optimizer.lr'):
    reproduce.main(['--suite=digits', '--quick', f'--methods={SMOKE_ROWS}', f'--out={out}',
                    '--results='])


def test_a_diverged_seed_is_a_result_and_is_not_trained_again(tmp_path, monkeypatch):
  """A run stopped by a non-finite loss is recorded, reported and left out of the means;
  the study goes on, and a rerun does not train it again."""
  from robustjax import training  # pylint: disable=g-import-not-at-top
  calls = []

  def diverge(config, workdir):
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    raise training.NonFiniteError('non-finite loss at step 3: nan')

  monkeypatch.setattr(training, 'train_and_evaluate', diverge)
  monkeypatch.setattr(reproduce, 'step_costs', lambda *a, **k: {'standard': 1.0})
  results_md = tmp_path / 'RESULTS.md'
  args = ['--suite=digits', '--quick', '--methods=standard', f'--out={tmp_path / "out"}',
          f'--results={results_md}']
  summary = reproduce.main(args)
  assert len(calls) == 1 and summary['table'] == {}
  assert summary['runs']['standard'] == [
      {'diverged': 'non-finite loss at step 3: nan', 'seconds': pytest.approx(0, abs=60)}]
  assert ('every seed stopped on a non-finite loss (no model to evaluate): standard '
          '(non-finite loss at step 3: nan)') in results_md.read_text()
  reproduce.main(args)
  assert len(calls) == 1


@pytest.mark.slow
def test_a_diverged_seed_is_left_out_of_the_means_and_named(smoke):
  _, _, summary = smoke
  run = summary['runs']['standard'][0]
  methods = [m for m in reproduce._methods('digits') if m.name == 'standard']  # pylint: disable=protected-access
  table = reproduce.aggregate({'standard': [run, {'diverged': 'non-finite loss at step 9'}]},
                              methods, reproduce.SUITES['digits'], {})
  row = table['standard']
  assert row['clean'] == (run['clean'], 0.0) and row['seeds'] == 1 and row['diverged'] == 1
  assert '1 of 2 seeds stopped on a non-finite loss' in row['label']
