"""DeiT's augmentations (ppuhd/data/augment.py) against timm's semantics."""

import math
import os

import numpy as np
import paddle
import pytest

from ppuhd import builder
from ppuhd.data.augment import (
    OPS,
    RAND_INCREASING_OPS,
    RAND_OPS,
    Mixup,
    OpDraw,
    RandAugment,
    RandConfig,
    RandomErasing,
    parse_rand_config,
)
from ppuhd.registry import TRANSFORMS, ConfigError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "augment", "randaugment_timm.npz")


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURES) as data:
        return {key: data[key] for key in data.files}


def golden_cases():
    with np.load(FIXTURES) as data:
        return sorted(key for key in data.files if key.count("/") == 3)


# ------------------------------------------------------ RandAugment: the ops
@pytest.mark.parametrize("key", golden_cases())
def test_each_op_equals_timm_exactly(golden, key):
    """timm's AugmentOp output at this magnitude and sign (see tests/fixtures/README.md)."""
    name, interpolation, magnitude, sign = key.split("/")
    magnitude = float(magnitude[1:])
    config = "rand-mmax20" if magnitude > 10 else "rand"  # the fixtures ran m15 with magnitude_max 20
    augment = RandAugment(config, img_mean=tuple(golden["fill"]), interpolation=interpolation)
    sample = {"image": golden["image"].copy(), "target": 3}
    out = augment.apply(sample, [OpDraw(name, True, magnitude, -1 if sign == "-" else 1)])["image"]
    assert out.dtype == np.uint8 and out.shape == golden["image"].shape
    np.testing.assert_array_equal(out, golden[key])


def test_fixtures_cover_every_op_of_both_sets(golden):
    covered = {key.split("/")[0] for key in golden_cases()}
    assert covered == set(RAND_OPS) | set(RAND_INCREASING_OPS) == set(OPS)
    assert int(golden["checked_timm032"]) > 0  # generated with the timm 0.3.2 cross-check on


def test_level_arguments_at_deit_magnitudes():
    augment = RandAugment()
    assert augment.argument("Rotate", 9, -1) == pytest.approx(-27.0)
    assert augment.argument("ShearX", 10, 1) == pytest.approx(0.3)
    assert augment.argument("TranslateXRel", 10, -1) == pytest.approx(-0.45)  # translate_pct, not translate_const
    assert augment.argument("PosterizeIncreasing", 9.9) == 1 and augment.argument("PosterizeIncreasing", 10) == 0
    assert augment.argument("SolarizeIncreasing", 9) == 256 - 230
    assert augment.argument("ColorIncreasing", 10, -1) == pytest.approx(0.1)
    assert augment.argument("Equalize", 9) is None


def test_zero_posterize_bits_give_black_as_deits_pillow_did(golden):
    out = RandAugment().apply({"image": golden["image"].copy()}, [OpDraw("PosterizeIncreasing", True, 10.0)])
    assert not out["image"].any()


def test_geometric_ops_move_every_image_photometric_only_the_input(golden):
    image = golden["image"]
    augment = RandAugment()
    moved = augment.apply({"image": image.copy(), "target": image.copy()}, [OpDraw("Rotate", True, 9.0, -1)])
    np.testing.assert_array_equal(moved["image"], moved["target"])
    assert not np.array_equal(moved["image"], image)
    inverted = augment.apply({"image": image.copy(), "target": image.copy()}, [OpDraw("Invert", True, 9.0)])
    np.testing.assert_array_equal(inverted["image"], 255 - image)
    np.testing.assert_array_equal(inverted["target"], image)


def test_rand_augment_needs_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 RGB.*before Normalize"):
        RandAugment()({"image": np.zeros((8, 8, 3), np.float32)}, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, message", [
    ({"img_mean": (0.5, 0.4, 0.4)}, "img_mean"),
    ({"img_mean": (1, 2)}, "img_mean"),
    ({"interpolation": "lanczos"}, "interpolation"),
])
def test_rand_augment_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandAugment(**kwargs)


# ----------------------------------------------------- RandAugment: the policy
@pytest.mark.parametrize("text, expected", [
    ("rand-m9-mstd0.5-inc1", RandConfig(magnitude=9, magnitude_std=0.5, increasing=True)),
    ("rand", RandConfig()),
    ("rand-inc0-p0.7-n3-m5-mmax15", RandConfig(5, 3, 0.7, 0.0, 15, False)),
    ("rand-m7-mstd101", RandConfig(magnitude=7, magnitude_std=math.inf)),
])
def test_parse_config_strings(text, expected):
    assert parse_rand_config(text) == expected


def test_inc_chooses_the_op_set():
    assert RandAugment("rand-m9-mstd0.5-inc1").ops == RAND_INCREASING_OPS
    assert RandAugment("rand-m9-inc0").ops == RAND_OPS  # (timm 0.3.2 read inc0 as on: bool('0'))


@pytest.mark.parametrize("text, message", [
    ("rnd-m9", "must start with 'rand'"),
    ("", "must start with 'rand'"),
    ("rand-m9.5", "'m' needs an integer"),
    ("rand-x3", "unknown section 'x3'"),
    ("rand-mstd", "unknown section 'mstd'"),
    ("rand--m9", "unknown section ''"),
    ("rand-tweights", "unknown section"),
    ("rand-m9-m8", "given twice"),
    ("rand-p1.5", "0 <= p <= 1"),
    ("rand-n0", "n >= 1"),
    ("rand-inc2", "inc must be 0 or 1"),
    ("rand-mmax0", "mmax must be positive"),
])
def test_bad_config_strings_are_explained(text, message):
    with pytest.raises(ValueError, match=message):
        parse_rand_config(text)


def test_policy_statistics_match_timm():
    """Ops uniform with replacement, each applied with p 0.5, magnitude N(9, 0.5) clipped to [0, 10]."""
    augment = RandAugment("rand-m9-mstd0.5-inc1")
    rng = np.random.default_rng(0)
    draws = [augment.draw(rng) for _ in range(20000)]
    assert all(len(d) == 2 for d in draws)
    flat = [d for pair in draws for d in pair]
    counts = np.array([sum(d.name == name for d in flat) for name in RAND_INCREASING_OPS])
    expected = len(flat) / len(RAND_INCREASING_OPS)
    assert np.abs(counts - expected).max() < 5 * math.sqrt(expected)  # uniform over the 15 ops
    assert sum(d[0].name == d[1].name for d in draws) / len(draws) == pytest.approx(1 / 15, abs=0.01)  # replacement
    applied = [d for d in flat if d.applied]
    assert len(applied) / len(flat) == pytest.approx(0.5, abs=0.01)
    magnitudes = np.array([d.magnitude for d in applied])
    # E[min(X, 10)] for X ~ N(9, 0.5): 9 - 0.5 * (phi(2) - 2 * Q(2))
    q2 = 0.5 * math.erfc(2 / math.sqrt(2))
    mean = 9 - 0.5 * (math.exp(-2) / math.sqrt(2 * math.pi) - 2 * q2)
    assert magnitudes.min() >= 0 and magnitudes.max() == 10.0
    assert magnitudes.mean() == pytest.approx(mean, abs=0.01)
    assert 0.46 < magnitudes.std() < 0.5
    assert (magnitudes == 10.0).mean() == pytest.approx(q2, abs=0.005)
    signs = np.array([d.sign for d in applied if OPS[d.name].signed])
    assert (signs == -1).mean() == pytest.approx(0.5, abs=0.02)
    assert all(d.sign == 1 for d in applied if not OPS[d.name].signed)


def test_probability_and_layers_from_the_string():
    rng = np.random.default_rng(1)
    always = [d for _ in range(200) for d in RandAugment("rand-n3-p1.0-m5").draw(rng)]
    assert len(always) == 600 and all(d.applied and d.magnitude == 5.0 for d in always)
    assert not any(d.applied for _ in range(200) for d in RandAugment("rand-p0").draw(rng))
    uniform = [d.magnitude for _ in range(2000) for d in RandAugment("rand-p1-m8-mstd200").draw(rng)]
    assert min(uniform) >= 0 and max(uniform) <= 8 and np.mean(uniform) == pytest.approx(4, abs=0.15)


def test_same_seed_same_augmentation(golden):
    augment = RandAugment("rand-m9-mstd0.5-inc1-n4-p1")

    def run(seed):
        return augment({"image": golden["image"].copy(), "target": 0}, np.random.default_rng(seed))["image"]

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_registered_and_built_from_config():
    augment = builder.build({"type": "RandAugment", "config_str": "rand-m9-mstd0.5-inc1",
                             "img_mean": [124, 116, 104], "interpolation": "bicubic"}, TRANSFORMS)
    assert isinstance(augment, RandAugment) and augment.fill == (124, 116, 104)
    with pytest.raises(ConfigError, match="RandAugment.*bad-string"):
        builder.build({"type": "RandAugment", "config_str": "bad-string"}, TRANSFORMS)


# --------------------------------------------------------------- RandomErasing
def chw(value=0.0, shape=(3, 20, 24)):
    return {"image": np.full(shape, value, np.float32), "target": 1}


def test_erasing_probability():
    erase = RandomErasing(prob=0.25)
    rng = np.random.default_rng(0)
    erased = [erase(chw(), rng)["image"].any() for _ in range(4000)]
    assert np.mean(erased) == pytest.approx(0.25, abs=0.02)


def test_erased_box_respects_area_and_aspect_limits():
    erase = RandomErasing(min_area=0.02, max_area=1 / 3, min_aspect=0.3)
    rng = np.random.default_rng(1)
    height, width = 60, 80
    boxes = [erase.box(height, width, 1, rng) for _ in range(3000)]
    fitted = [b for b in boxes if b is not None]
    assert len(fitted) == len(boxes)  # at this size some of the 10 attempts always fits
    for top, left, h, w in fitted:
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert h < height and w < width
        # h and w are rounded from sqrt(area * aspect) and sqrt(area / aspect)
        assert (h - 0.5) * (w - 0.5) <= height * width / 3 and (h + 0.5) * (w + 0.5) >= 0.02 * height * width
        assert (h - 0.5) / (w + 0.5) <= 1 / 0.3 and (h + 0.5) / (w - 0.5) >= 0.3
    areas = np.array([h * w for _, _, h, w in fitted]) / (height * width)
    assert areas.mean() == pytest.approx((0.02 + 1 / 3) / 2, abs=0.01)  # uniform area
    aspects = np.log([h / w for _, _, h, w in fitted])
    assert np.median(aspects) == pytest.approx(0, abs=0.1)  # log-uniform, symmetric


def test_pixel_mode_fills_normal_values_only_inside_the_box():
    erase = RandomErasing(prob=1.0, mode="pixel")
    values = []
    for seed in range(200):
        out = erase(chw(), np.random.default_rng(seed))["image"]
        replay = np.random.default_rng(seed)
        replay.random()  # the probability draw
        top, left, h, w = erase.box(20, 24, 1, replay)
        inside = np.zeros(out.shape, bool)
        inside[:, top : top + h, left : left + w] = True
        assert not out[~inside].any()
        np.testing.assert_array_equal(out[inside].reshape(3, h, w), erase.fill(3, h, w, replay))
        values.append(out[inside])
    values = np.concatenate(values)
    assert values.mean() == pytest.approx(0, abs=0.02) and values.std() == pytest.approx(1, abs=0.02)


def test_rand_and_const_modes():
    rng = np.random.default_rng(2)
    out = RandomErasing(prob=1.0, mode="rand")(chw(5.0), rng)["image"]
    erased = out != 5.0
    assert erased.any()
    for channel in range(3):
        assert len(np.unique(out[channel][erased[channel]])) == 1  # one normal value per channel
    out = RandomErasing(prob=1.0, mode="const")(chw(5.0), rng)["image"]
    assert (out == 0).any() and set(np.unique(out)) == {0.0, 5.0}


def test_erasing_several_boxes_and_input_left_untouched():
    erase = RandomErasing(prob=1.0, max_count=3)
    sample = chw()
    original = sample["image"]
    counts = set()
    for seed in range(100):
        out = erase(dict(sample), np.random.default_rng(seed))["image"]
        replay = np.random.default_rng(seed)
        replay.random()
        counts.add(int(replay.integers(1, 4)))
        assert out.any()
    assert counts == {1, 2, 3} and not original.any()


def test_erasing_arguments_checked():
    with pytest.raises(ValueError, match="mode"):
        RandomErasing(mode="noise")
    with pytest.raises(ValueError, match="after Normalize and ToCHW"):
        RandomErasing()({"image": np.zeros((8, 8, 3), np.uint8)}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_count"):
        RandomErasing(min_count=2, max_count=1)


# ----------------------------------------------------------------------- Mixup
def make_batch(size=8, shape=(3, 12, 16), num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((size, *shape)).astype(np.float32)
    target = rng.integers(0, num_classes, size)
    return {"image": paddle.to_tensor(image), "target": paddle.to_tensor(target, dtype="int64")}, image, target


def expected_targets(target, lam, num_classes=10, smoothing=0.1):
    off = smoothing / num_classes
    rows = np.full((len(target), num_classes), off, np.float32)
    rows[np.arange(len(target)), target] = 1 - smoothing + off
    return rows * lam + rows[::-1] * (1 - lam)


def test_mixup_blends_with_the_reversed_batch():
    mixup = Mixup(num_classes=10, cutmix_alpha=0.0)
    for seed in range(5):
        lam, box = mixup.sample_params(12, 16, np.random.default_rng(seed))
        batch, image, target = make_batch(seed=seed)
        out = mixup(batch, np.random.default_rng(seed))
        assert box is None and 0 < lam < 1
        np.testing.assert_allclose(out["image"].numpy(), lam * image + (1 - lam) * image[::-1], rtol=1e-6, atol=1e-6)
        mixed = out["target"].numpy()
        assert mixed.dtype == np.float32 and mixed.shape == (8, 10)
        np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(mixed, expected_targets(target, lam), rtol=1e-6, atol=1e-7)


def test_cutmix_pastes_a_box_of_the_reversed_batch_and_corrects_lam():
    mixup = Mixup(num_classes=10, mixup_alpha=0.0)
    height, width = 12, 16
    for seed in range(30):
        lam, (top, bottom, left, right) = mixup.sample_params(height, width, np.random.default_rng(seed))
        assert lam == pytest.approx(1 - (bottom - top) * (right - left) / (height * width))
        # the box timm 0.3.2's rand_bbox makes: cut // 2 either side of the centre, then clipped
        replay = np.random.default_rng(seed)
        replay.random()
        raw = replay.beta(1.0, 1.0)
        cut_h, cut_w = int(height * math.sqrt(1 - raw)), int(width * math.sqrt(1 - raw))
        cy, cx = replay.integers(0, height), replay.integers(0, width)
        assert (top, bottom) == (max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height))
        assert (left, right) == (max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width))

        batch, image, target = make_batch(seed=seed)
        out = mixup(batch, np.random.default_rng(seed))
        inside = np.zeros(image.shape, bool)
        inside[:, :, top:bottom, left:right] = True
        mixed = out["image"].numpy()
        np.testing.assert_array_equal(mixed[inside], image[::-1][inside])
        np.testing.assert_array_equal(mixed[~inside], image[~inside])
        np.testing.assert_allclose(out["target"].numpy(), expected_targets(target, lam), rtol=1e-6, atol=1e-7)


def test_switch_probability_and_mix_probability():
    rng = np.random.default_rng(3)
    params = [Mixup(num_classes=10).sample_params(32, 32, rng) for _ in range(4000)]
    assert np.mean([box is not None for _, box in params]) == pytest.approx(0.5, abs=0.03)
    mixup_lams = [lam for lam, box in params if box is None]
    assert np.mean(mixup_lams) == pytest.approx(0.5, abs=0.02)  # Beta(0.8, 0.8) is symmetric
    params = [Mixup(num_classes=10, prob=0.3).sample_params(32, 32, rng) for _ in range(4000)]
    assert np.mean([lam == 1.0 for lam, _ in params]) == pytest.approx(0.7, abs=0.03)


def test_unmixed_batch_keeps_images_and_smooths_targets():
    batch, image, target = make_batch()
    out = Mixup(num_classes=10, prob=0.0)(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(out["image"].numpy(), image)
    np.testing.assert_array_equal(out["target"].numpy(), expected_targets(target, 1.0))
    assert set(np.unique(out["target"].numpy()).tolist()) == {np.float32(0.01), np.float32(0.91)}


def test_cutmix_minmax_box_sides():
    mixup = Mixup(num_classes=10, mixup_alpha=0.0, cutmix_minmax=(0.25, 0.75))
    rng = np.random.default_rng(4)
    for _ in range(200):
        lam, (top, bottom, left, right) = mixup.sample_params(40, 48, rng)
        assert 10 <= bottom - top < 30 and 12 <= right - left < 36 and bottom < 40 and right < 48
        assert lam == pytest.approx(1 - (bottom - top) * (right - left) / (40 * 48))


def test_same_seed_same_mix():
    mixup = Mixup(num_classes=10)
    first = mixup(make_batch()[0], np.random.default_rng(7))
    second = mixup(make_batch()[0], np.random.default_rng(7))
    np.testing.assert_array_equal(first["image"].numpy(), second["image"].numpy())
    np.testing.assert_array_equal(first["target"].numpy(), second["target"].numpy())


def test_odd_batch_refused():
    with pytest.raises(ValueError, match="must be even; got 7"):
        Mixup(num_classes=10)(make_batch(size=7)[0], np.random.default_rng(0))


def test_mixup_arguments_checked_and_built_from_config():
    with pytest.raises(ValueError, match="mixup_alpha > 0"):
        Mixup(num_classes=10, mixup_alpha=0.0, cutmix_alpha=0.0)
    mixup = builder.build({"type": "Mixup", "num_classes": 1000}, TRANSFORMS)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.switch_prob, mixup.label_smoothing) == (0.8, 1.0, 0.5, 0.1)
    with pytest.raises(ConfigError, match="needs 'num_classes'"):
        builder.build({"type": "Mixup"}, TRANSFORMS)
