"""Every config file loads, validates, names things by string and builds its model."""

import glob
import importlib.util
import math
import os
import sys

import jax
import ml_collections
import pytest

from robustjax import models
from robustjax.training import schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                      if os.path.basename(p) != 'base.py')
METHODS = ('standard', 'at', 'trades', 'gradnorm', 'cure', 'scorpio', 'soar', 'llr',
           'lipschitz', 'crt', 'smoothing', 'fgsm', 'n_fgsm', 'gradalign', 'elle', 'elle_a')


def load(path):
  spec = importlib.util.spec_from_file_location(
      'cfg_' + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _leaves(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def test_every_method_has_a_digits_variant_and_a_paper_dataset():
  names = {os.path.basename(p)[:-3] for p in CONFIG_FILES}
  for method in METHODS:
    assert f'{method}_digits' in names
    assert any(n.startswith(method + '_') and not n.endswith('_digits') for n in names), method


@pytest.mark.parametrize('path', CONFIG_FILES, ids=os.path.basename)
def test_config_loads_and_validates(path):
  module = load(path)
  assert module.__doc__ and 'python -m robustjax.main --config=configs/' in module.__doc__
  config = module.get_config()
  schema.validate(config, num_devices=1)
  for key in ('seed', 'batch_size', 'num_train_steps', 'checkpoint_every_steps'):
    assert key in config
  assert config.eval.eps >= 0
  for field, value in _leaves(config):  # strings, numbers, bools, tuples: no objects
    ok = (value is None or isinstance(value, (str, int, float, bool)) or
          (isinstance(value, (tuple, list)) and
           all(isinstance(v, (str, int, float)) for v in value)))
    assert ok, f'{field} holds {type(value)}'
  # The model builds for the dataset (shapes only, nothing compiled).
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  from robustjax.training import feed  # pylint: disable=g-import-not-at-top
  model = train.build_model(config, feed.info(config.dataset))
  shapes = jax.eval_shape(lambda: models.init(model, jax.random.PRNGKey(0),
                                              feed.info(config.dataset).input_shape))
  assert 'params' in shapes
  # Its whole train step (every term, schedule and controller) traces on the dataset's
  # shapes: jax.eval_shape, nothing compiled. Training runs of a few steps (the
  # reproduce smoke test, test_main) cover a sample of the configs. The study's datasets
  # only: every method has its digits config, and tracing CIFAR's WideResNet steps
  # takes 5-14 s each.
  if config.dataset.name not in ('digits', 'fashion_mnist'):
    return
  from robustjax.training import optim  # pylint: disable=g-import-not-at-top
  from robustjax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  info = feed.info(config.dataset)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  mesh = step_lib.make_mesh(jax.devices()[:1])
  state = jax.eval_shape(lambda: step_lib.init_state(
      model, tx, rng=jax.random.PRNGKey(0), input_shape=info.input_shape, mesh=mesh,
      controller=step_lib.controller_from_config(config.controller)))
  batch = (jax.ShapeDtypeStruct((config.batch_size, *info.input_shape), jax.numpy.float32),
           jax.ShapeDtypeStruct((config.batch_size,), jax.numpy.int32))
  train_step = step_lib.train_step_from_config(config, model, tx, schedule)
  new_state, metrics = jax.eval_shape(train_step, state, batch)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert metrics['loss'].shape == () and 'grad_norm' in metrics


def _parse(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'cfg', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return fv.config


def test_overrides_work_like_the_command_line():
  path = os.path.join(ROOT, 'configs', 'llr_digits.py')
  config = _parse(['prog', f'--config={path}', '--config.optimizer.lr=0.05',
                   '--config.regularizers.llr.hparams.lam=2.5', '--config.eval.eps=0.2'])
  assert config.optimizer.lr == 0.05
  assert config.regularizers.llr.hparams.lam == 2.5
  assert config.eval.eps == 0.2
  schema.validate(config)
  with pytest.raises(Exception, match='optimiser'):
    _parse(['prog', f'--config={path}', '--config.optimiser.lr=0.05'])


def test_several_terms_combine_with_weights():
  config = load(os.path.join(ROOT, 'configs', 'lipschitz_digits.py')).get_config()
  assert len(config.regularizers) == 2
  config.regularizers.extra = schema.term('gradient_norm', weight=0.1)
  schema.validate(config)


@pytest.mark.parametrize('mutate, field', [
    (lambda c: c.update({'optimiser': 1}), 'config.optimiser'),
    (lambda c: c.eval.update({'epsilon': 1.0}), 'config.eval.epsilon'),
    (lambda c: c.model.update({'name': 'resnet99'}), 'config.model.name'),
    (lambda c: c.dataset.update({'name': 'imagenet'}), 'config.dataset.name'),
    (lambda c: c.optimizer.update({'name': 'lion'}), 'config.optimizer.name'),
    (lambda c: c.eval.update({'eps': -0.1}), 'config.eval.eps'),
    (lambda c: c.eval.update({'p': 0.5}), 'config.eval.p'),
    (lambda c: c.update({'batch_size': 0}), 'config.batch_size'),
    (lambda c: c.update({'num_train_steps': -1}), 'config.num_train_steps'),
    (lambda c: c.regularizers.update({'r': schema.term('scorpion')}),
     'config.regularizers.r.name'),
    (lambda c: c.regularizers.update({'r': schema.term('llr', lamda=1.0)}),
     'config.regularizers.r.hparams.lamda'),
    (lambda c: c.regularizers.update({'r': schema.term('llr', eps=-1.0)}),
     'config.regularizers.r.hparams.eps'),
    (lambda c: c.controller.update({'name': 'adaptive_psi', 'term': 'nope'}),
     'config.controller.term'),
])
def test_bad_config_names_the_field(mutate, field):
  config = schema.base_config()
  mutate(config)
  with pytest.raises(ValueError) as info:
    schema.validate(config)
  assert str(info.value).startswith(field), str(info.value)


def test_unknown_names_list_valid_choices():
  config = schema.base_config()
  config.regularizers.r = schema.term('scorpion')
  with pytest.raises(ValueError, match="'scorpio'.*|.*'scorpio'"):
    schema.validate(config)
  config = schema.base_config()
  config.model.name = 'vgg'
  with pytest.raises(ValueError, match="'resnet18'"):
    schema.validate(config)


def test_batch_size_must_divide_over_devices():
  config = schema.base_config()
  config.batch_size = 30
  with pytest.raises(ValueError, match=r'config.batch_size.*devices \(4\)'):
    schema.validate(config, num_devices=4)
  config.batch_size = 32
  schema.validate(config, num_devices=4)


def test_smoothing_configs_keep_cohen_et_al():
  digits = load(os.path.join(ROOT, 'configs', 'smoothing_digits.py')).get_config()
  assert digits.nominal_weight == 0.0
  assert digits.regularizers.gaussian.name == 'gaussian_augmentation'
  assert digits.regularizers.gaussian.hparams.sigma == 0.25
  module = load(os.path.join(ROOT, 'configs', 'smoothing_cifar.py'))
  for arg, sigma in (('0.12', 0.12), ('0.25', 0.25), ('0.50', 0.5), ('1.0', 1.0)):
    config = module.get_config(arg)
    schema.validate(config)
    assert config.regularizers.gaussian.hparams.sigma == sigma and config.nominal_weight == 0
  with pytest.raises(ValueError, match='sigma'):
    module.get_config('0.3')
  config = module.get_config()
  # ResNet-110: 3 stages of 18 basic blocks (2 convs each), a stem conv and the head.
  assert 2 * sum(config.model.kwargs.stage_sizes) + 2 == 110
  assert (config.optimizer.lr, config.optimizer.momentum, config.optimizer.weight_decay,
          config.batch_size) == (0.1, 0.9, 1e-4, 400)
  assert config.optimizer.schedule == 'piecewise'
  assert [round(b * 90) for b in config.optimizer.boundaries] == [30, 60]
  assert config.num_train_steps == round(90 * 50000 / 400)


def test_paper_values_are_kept():
  soar = load(os.path.join(ROOT, 'configs', 'soar_cifar.py')).get_config()
  assert soar.regularizers.soar.grad_clip == 30.0
  assert soar.regularizers.soar.hparams.value_clip == 10.0
  assert soar.regularizers.soar.weight == 0.5 and soar.init_from
  llr = load(os.path.join(ROOT, 'configs', 'llr_cifar.py')).get_config()
  assert (llr.regularizers.llr.hparams.lam, llr.regularizers.llr.hparams.mu) == (4.0, 0.3)
  assert llr.nominal_weight == 2.0 and llr.regularizers.llr.schedules.eps.steps > 0
  assert math.isclose(llr.eval.eps, 8 / 255)


def _get(config, field):
  value = config
  for part in field.split('.'):
    value = value[part]
  return value


# Each config that cites a table row, pinned to that row (values written from the papers).
PAPER_ROWS = {
    # Woods et al., Table II, "Eq. (9) with adv. training, using L_target = 1.5 and
    # L_adv,tandem": HHAT, L2,min, eps = 0.1 (the dotted row, N3).
    'lipschitz_cifar': {
        'model.name': 'resnet44', 'model.kwargs.activation': 'hhrelu',
        'controller.name': 'adaptive_psi', 'controller.target_loss': 1.5,
        'controller.k0': 220.0, 'controller.k': 0.02, 'controller.eps_better': 1.0,
        'controller.eps_worse': 0.01, 'controller.loss': 'auto',
        'regularizers.lipschitz.hparams.zeta': 0.2,
        'regularizers.lipschitz.hparams.tandem': True,
        'regularizers.lipschitz.hparams.power': 2.0,
        'regularizers.lipschitz.hparams.num_outputs': 1,
        'regularizers.lipschitz.hparams.output_zeroing': 0.01,
        'regularizers.lipschitz.inputs_from': 'l2min',
        'regularizers.l2min.name': 'adversarial_l2min',
        'regularizers.l2min.hparams.half_half': True,
        'regularizers.l2min.hparams.eps': 0.1 * math.sqrt(32 * 32 * 3),
        'regularizers.l2min.hparams.steps': 7,
        'nominal_weight': 0.0,
    },
    # Qin et al. 2019, Table F2, Wide-ResNet-28-8 softplus, (lambda, mu) = (4, 0.3).
    'llr_cifar': {
        'model.name': 'wrn28_8', 'model.kwargs.activation': 'softplus',
        'regularizers.llr.hparams.lam': 4.0, 'regularizers.llr.hparams.mu': 0.3,
        'regularizers.llr.hparams.eps': 8 / 255, 'regularizers.llr.hparams.steps': 10,
        'nominal_weight': 2.0, 'batch_size': 256, 'optimizer.weight_decay': 2e-4,
    },
    # Singla & Feizi 2020, CRT table: Lx[1024] has L linear layers (2x: 784-1024-10),
    # softplus, gamma = 0.01 / 0.05 / 0.07, rho = 1.58.
    'crt_mnist': {
        'dataset.name': 'mnist', 'model.kwargs.widths': (1024,),
        'model.kwargs.activation': 'softplus',
        'regularizers.crt.hparams.activation': 'softplus',
        'regularizers.crt.hparams.gamma': 0.01, 'regularizers.crt.hparams.eps': 1.58,
        'eval.p': 2.0, 'eval.eps': 1.58,
    },
    'crt_mnist_3x1024': {
        'model.kwargs.widths': (1024, 1024), 'model.kwargs.activation': 'softplus',
        'regularizers.crt.hparams.gamma': 0.05, 'regularizers.crt.hparams.eps': 1.58,
    },
    'crt_mnist_4x1024': {
        'model.kwargs.widths': (1024, 1024, 1024), 'model.kwargs.activation': 'softplus',
        'regularizers.crt.hparams.gamma': 0.07, 'regularizers.crt.hparams.eps': 1.58,
    },
    # Gowal et al. 2018: kappa 1 -> 0.5 while eps ramps from 0; Zhang et al. 2020
    # (CROWN-IBP): kappa 1 -> 0 and beta 1 -> 0 over the ramp; Fashion-MNIST eps 0.1.
    'ibp_fashion_mnist': {
        'model.name': 'small_cnn', 'regularizers.ibp.hparams.eps': 0.1,
        'regularizers.ibp.hparams.kappa': 0.5, 'regularizers.ibp.schedules.kappa.init': 1.0,
        'regularizers.ibp.schedules.eps.init': 0.0, 'nominal_weight': 0.0,
        'eval.eps': 0.1, 'eval.p': math.inf,
    },
    'crown_ibp_fashion_mnist': {
        'model.name': 'small_cnn', 'regularizers.crown_ibp.hparams.eps': 0.1,
        'regularizers.crown_ibp.hparams.kappa': 0.0,
        'regularizers.crown_ibp.hparams.beta': 0.0,
        'regularizers.crown_ibp.schedules.kappa.init': 1.0,
        'regularizers.crown_ibp.schedules.beta.init': 1.0,
        'regularizers.crown_ibp.schedules.eps.init': 0.0, 'nominal_weight': 0.0,
        'eval.eps': 0.1, 'eval.p': math.inf,
    },
    # SOAR sec. 5 and app. C: lambda 0.5, clip 10 / 30, PGD1 start; PGD-20 evaluation at
    # eps 8/255 with steps of 2/255.
    'soar_cifar': {
        'regularizers.soar.weight': 0.5, 'regularizers.soar.grad_clip': 30.0,
        'regularizers.soar.hparams.value_clip': 10.0,
        'regularizers.soar.hparams.init': 'pgd1',
        'regularizers.soar.hparams.eps': 8 / 255,
        'regularizers.soar.aux_loss': 'loss_at_start',
        'optimizer.lr': 0.002, 'eval.p': math.inf, 'eval.eps': 8 / 255, 'eval.steps': 20,
        'eval.step_size': 2 / 255,
    },
}


@pytest.mark.parametrize('name', sorted(PAPER_ROWS))
def test_config_equals_its_cited_row(name):
  config = load(os.path.join(ROOT, 'configs', f'{name}.py')).get_config()
  for field, want in PAPER_ROWS[name].items():
    got = _get(config, field)
    if isinstance(want, float):
      assert got == pytest.approx(want, rel=1e-9), field
    else:
      assert got == want, field


def test_fashion_mnist_suite_has_every_digits_row_on_its_paper_models():
  from experiments import reproduce  # pylint: disable=g-import-not-at-top
  digits = [m.name for m in reproduce._methods('digits')]  # pylint: disable=protected-access
  rows = reproduce._methods('fashion_mnist')  # pylint: disable=protected-access
  assert [m.name for m in rows] == digits
  for m in rows:
    config = reproduce.load_config(m, 0, '/nonexistent', quick=False)
    assert config.dataset.name == 'fashion_mnist' and config.dataset.source == 'auto'
    assert config.batch_size == 128
    if m.name in ('crt', 'softplus', 'ibp', 'crown_ibp'):  # CRT's "2x[1024]": 784-1024-10
      assert config.model.name == 'mlp' and tuple(config.model.kwargs.widths) == (1024,)
      assert config.model.kwargs.activation == 'softplus'
    else:
      assert config.model.name == 'small_cnn'
    for t in config.regularizers.values():
      if 'eps' in t.hparams and t.hparams.get('p', 2.0) == math.inf:
        assert t.hparams.eps == 0.1, m.name  # CROWN-IBP's Fashion-MNIST radius
    assert m.l2 == (m.name in ('lipschitz', 'l2min', 'crt', 'softplus', 'ibp', 'crown_ibp'))
  suite = reproduce.SUITES['fashion_mnist']
  assert 0.1 in suite['linf'] and 1.58 in suite['radii'] and suite['num_examples'] == 1000
  assert suite['clean_examples'] == 0  # clean accuracy on all 10,000 test images
