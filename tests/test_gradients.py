"""The backward rung of the reproduction ladder, and the gradient sketch its fixtures rely on."""

import numpy as np
import pytest

from tests.alignment import gradients, ladder

GEN = gradients.GEN
CHECKS = [check for check in ladder.load_checks() if check.function.__module__ == gradients.__name__]
SLOW_FAMILIES = ("UHDFour",)  # three full-width-or-more models and a float64 run: about 10 s


# Measured, explained in docs/alignment_backward.md, left for a decision: in UHDFour-LOL at 64x96
# 19 amplitude-branch tensors of lownet.conv4/conv5 are further from float64 than the official
# float32 (up to 8.5e-4 against its 9e-6), while the official float32 is further off elsewhere
# (up to 2.5e-3); both float64 runs agree to 8e-10.
KNOWN_FAILURES = {("UHDFour", "uhdfour_lol")}


@pytest.mark.parametrize("check", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] * (c.family in SLOW_FAMILIES))
                                   for c in CHECKS])
def test_every_gradient_matches_the_official_float64_gradient(check):
    rows = check.run()
    failing = {(row.family, row.case) for row in rows if not row.passed}
    assert failing <= KNOWN_FAILURES, [row for row in rows if not row.passed]
    if failing:
        pytest.xfail(f"known: {sorted(failing)}, see docs/alignment_backward.md")


def test_the_sketch_is_linear_and_estimates_the_norm_of_a_difference():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(64, 48, 3)), rng.normal(size=(64, 48, 3))
    sketch = lambda g: GEN.project("some.weight", g)
    np.testing.assert_allclose(sketch(a) - sketch(b), sketch(a - b), atol=1e-12)
    # E|Sd|^2 = |d|^2: over many independent names the mean ratio is close to 1
    ratios = [np.linalg.norm(GEN.project(f"w{i}", a - b)) ** 2 / np.linalg.norm(a - b) ** 2 for i in range(200)]
    assert abs(np.mean(ratios) - 1) < 0.03
    assert np.std(ratios) < np.sqrt(2 / GEN.SKETCH_SIZE) * 1.2


def test_small_tensors_are_stored_whole():
    small = np.arange(GEN.WHOLE_LIMIT, dtype=np.float64)
    np.testing.assert_array_equal(GEN.project("bias", small), small)


def test_synthetic_weights_are_deterministic_and_off_their_initial_values():
    keys = ["blocks.0.norm1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "attn.fac", "bn.running_var"]
    shapes = [[8], [24, 8], [24], [1], [8]]
    first, again = GEN.synthetic_state_dict(keys, shapes), GEN.synthetic_state_dict(keys, shapes)
    for key in keys:
        np.testing.assert_array_equal(first[key], again[key])
        assert first[key].dtype == np.float32
    assert np.all(np.abs(first["blocks.0.attn.qkv.weight"]) <= 1 / np.sqrt(8))
    assert 2 <= first["attn.fac"][0] <= 6 and not np.allclose(first["blocks.0.norm1.weight"], 1)
