"""Classification losses and metrics against direct NumPy computations."""

import numpy as np
import paddle
import pytest

from ppuhd.losses.classification import CrossEntropyLoss, SoftTargetCrossEntropy
from ppuhd.metrics.classification import TopKAccuracy

rng = np.random.default_rng(0)
LOGITS = rng.standard_normal((6, 5)).astype(np.float32) * 3
LABELS = np.array([0, 4, 2, 2, 1, 3])


def log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_cross_entropy_against_smoothed_one_hot(smoothing):
    classes = LOGITS.shape[1]
    target = np.full(LOGITS.shape, smoothing / classes)
    target[np.arange(len(LABELS)), LABELS] += 1 - smoothing
    expected = -(target * log_softmax(LOGITS)).sum(axis=1).mean()
    got = CrossEntropyLoss(smoothing)(paddle.to_tensor(LOGITS), paddle.to_tensor(LABELS))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_soft_target_cross_entropy():
    target = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
    expected = -(target * log_softmax(LOGITS)).sum(axis=1).mean()
    got = SoftTargetCrossEntropy()(paddle.to_tensor(LOGITS), paddle.to_tensor(target))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_top_k_accuracy_over_batches():
    metric = TopKAccuracy(topk=(1, 3))
    for part in (slice(0, 4), slice(4, 6)):
        metric.update(paddle.to_tensor(LOGITS[part]), paddle.to_tensor(LABELS[part]))
    ranks = (-LOGITS).argsort(axis=1)
    expected = {f"top{k}": 100 * np.mean([LABELS[i] in ranks[i, :k] for i in range(6)]) for k in (1, 3)}
    assert metric.compute(metric.sums()) == pytest.approx(expected)


def test_top_k_accuracy_takes_the_argmax_of_soft_targets():
    metric = TopKAccuracy(topk=(1,))
    soft = np.eye(5, dtype=np.float32)[LABELS] * 0.8 + 0.04
    metric.update(paddle.to_tensor(LOGITS), paddle.to_tensor(soft))
    assert metric.compute(metric.sums())["top1"] == pytest.approx(100 * np.mean(LOGITS.argmax(1) == LABELS))
