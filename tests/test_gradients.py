"""The gradient sketch and seeded weights the ladder's backward rung relies on.

The rung itself is asserted with every other one in tests/test_alignment.py.
"""

import numpy as np

from tests.alignment import gradients

GEN = gradients.GEN


def test_a_nudge_moves_every_value_by_one_ulp_and_point_zero_by_none():
    values = {"w": np.linspace(-1, 1, 101, dtype=np.float32)}
    assert GEN.nudge(values, 0)["w"] is values["w"]
    moved = GEN.nudge(values, 3)["w"]
    # one step back towards the original lands on it: each value moved to a float32 neighbour
    assert np.all(moved != values["w"])
    np.testing.assert_array_equal(np.nextafter(moved, values["w"]), values["w"])
    np.testing.assert_array_equal(moved, GEN.nudge(values, 3)["w"])
    assert not np.array_equal(moved, GEN.nudge(values, 4)["w"])


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
