"""``train.to_static``: each step's forward and loss as a static program, equal to eager training.

The families run the ladder's training rung (five steps of tests/alignment/training.py
from the official code's initial weights) in both modes; resume, accumulation and
EMA in static mode are in test_engine.py, two-process training in test_tools.py.
"""

import numpy as np
import paddle
import pytest

from ppuhd.engine import Trainer
from tests.alignment import ladder, training
from tests.test_engine import tiny_config, weights_of

LOSS_TOLERANCE = 1e-5  # relative, per step (issue 14)


@pytest.mark.slow  # 10-20 s each on 2 cores
@pytest.mark.parametrize("family", list(training.RUNS))
def test_static_steps_equal_eager_ones_and_the_official_code(family):
    eager, static = training.train_family(family), training.train_family(family, to_static=True)
    eager_losses, static_losses = np.asarray(eager[1]), np.asarray(static[1])
    assert np.abs(static_losses - eager_losses).max() <= LOSS_TOLERANCE * np.abs(eager_losses).min()
    # every parameter the eager run moved moves in the static one too (a graph loop without gradients would not)
    frozen = [name for name, update in static[2].items() if not update.any() and eager[2][name].any()]
    assert not frozen, f"no gradient reached {frozen[:5]}"
    failed = [r for r in training.compare_family(family, static) if not r.passed
              and (r.step, r.family, r.case) not in ladder.KNOWN_DEVIATIONS]
    assert not failed, "\n".join(f"{r.case}: {r.measure} {r.diff:.3g} > {r.tolerance:.3g}" for r in failed)


@pytest.fixture
def concurrent_executor():
    """Paddle's default (operators run concurrently), whatever earlier tests set; restored afterwards."""
    flag = "FLAGS_new_executor_serial_run"
    before = paddle.get_flags([flag])[flag]
    paddle.set_flags({flag: False})
    yield
    paddle.set_flags({flag: before})


def test_static_runs_with_dropout_repeat_exactly(tmp_path, concurrent_executor):
    """Random operators draw in program order, so two runs (the basis of exact resume) agree to the bit."""
    runs = []
    for name in ("a", "b"):
        trainer = Trainer(tiny_config(tmp_path / name, to_static=True, iters=4, ema=None))  # drop path and dropout on
        trainer.run()
        runs.append((weights_of(trainer.setup.model), trainer.history))
    assert all(np.array_equal(runs[0][0][k], runs[1][0][k]) for k in runs[0][0])
    assert runs[0][1] == runs[1][1]
