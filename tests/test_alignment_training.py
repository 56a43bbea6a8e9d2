"""The batch layout the ladder's training rung (tests/alignment/training.py) relies on.

The rung itself is asserted with every other one in tests/test_alignment.py.
"""

import numpy as np

from ppuhd.data.sampler import TrainBatchSampler
from tests.alignment.training import SEED, FixedBatches, write_batches


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
