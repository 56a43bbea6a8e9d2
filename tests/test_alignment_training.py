"""The training rung of the ladder (tests/alignment/training.py) and the batch layout it relies on."""

import numpy as np
import pytest

from ppuhd.data.sampler import TrainBatchSampler
from tests.alignment import ladder
from tests.alignment.training import SEED, FixedBatches, write_batches

TRAINING_CHECKS = [c for c in ladder.load_checks() if c.step == "train"]


@pytest.mark.parametrize("check", TRAINING_CHECKS, ids=lambda c: c.name)
def test_training_rung(check):
    rows = check.run()
    failed = [f"{r.case}: {r.diff:.3g} > {r.tolerance:g} ({r.note})" for r in rows if not r.passed]
    assert not failed, "\n".join(failed)


def test_fixed_batches_reach_the_trainer_in_the_reference_order(tmp_path):
    steps, batch = 5, 3
    images = np.arange(steps * batch * 2, dtype=np.float32).reshape(steps, batch, 2)
    targets = np.arange(steps * batch).reshape(steps, batch)
    write_batches(images, targets, tmp_path / "batches.npz")
    dataset = FixedBatches(str(tmp_path / "batches.npz"))
    sampler = TrainBatchSampler(len(dataset), batch, seed=SEED)
    for step, keys in enumerate(sampler):
        drawn = [dataset[key] for key in keys]
        assert [int(s["target"]) for s in drawn] == targets[step].tolist()
        np.testing.assert_array_equal(np.stack([s["image"] for s in drawn]), images[step])
