"""RegNet against timm: conversion, eval and train-mode parity, variants, init, export.

The golden outputs come from timm with random weights and perturbed BatchNorms
(tests/fixtures/make_regnet_fixtures.py); these tests run without torch.
"""

import inspect
import json
import math
import os

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import ppuhd.models.regnet  # noqa: F401  (registers RegNet and the named variants)
from ppuhd import build_model, load_weights
from ppuhd.models.regnet import BN_MOMENTUM, Bottleneck, RegNet, regnet_stages
from ppuhd.registry import BACKBONES, MODELS
from ppuhd.weights import ConversionError, convert_torch_state_dict, find_state_dict, read_checkpoint
from ppuhd.weights.convert import torch_key_plan

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "regnet")
WEIGHTS = os.path.join(FIXTURES, "regnety_tiny_timm.pth")
TINY = dict(w0=16, wa=16.0, wm=2.0, depth=7, group_size=8, se_ratio=0.25, stem_width=16)
TOL = 1e-5


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(FIXTURES, "regnety_tiny_timm.npz")) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def timm_state():
    return find_state_dict(read_checkpoint(WEIGHTS))


def tiny_model(weights=WEIGHTS, **overrides):
    return build_model({"type": "RegNet", **TINY, "num_classes": 10, **overrides}, weights=weights)


def run(fn, x):
    with paddle.no_grad():
        return fn(paddle.to_tensor(x)).numpy()


def max_diff(a, b):
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("tag", ["", "_odd"])
def test_converted_timm_weights_give_timm_features_and_logits(reference, tag):
    model = tiny_model()
    x = reference[f"x{tag}"]
    assert max_diff(run(lambda t: model.forward_features(t).mean(axis=[2, 3]), x), reference[f"features{tag}"]) < TOL
    assert max_diff(run(model, x), reference[f"y{tag}"]) < TOL


def test_train_mode_matches_timm_and_updates_running_stats(reference, timm_state):
    """Batch statistics in the forward pass; running mean as torch; running variance
    as torch except Paddle's biased batch variance (torch: unbiased, factor n/(n-1))."""
    model = tiny_model()
    model.train()
    norms = {name: layer for name, layer in model.named_sublayers() if isinstance(layer, nn.BatchNorm2D)}
    counts = {}  # values per channel each BatchNorm saw: n

    def record(name):
        return lambda layer, inputs: counts.__setitem__(name, math.prod(inputs[0].shape) // inputs[0].shape[1])

    hooks = [layer.register_forward_pre_hook(record(name)) for name, layer in norms.items()]
    assert max_diff(run(model, reference["x"]), reference["y_train"]) < 1e-4
    for hook in hooks:
        hook.remove()

    m = BN_MOMENTUM
    for name, layer in norms.items():
        n = counts[name]
        before_mean, before_var = timm_state[f"{name}.running_mean"], timm_state[f"{name}.running_var"]
        torch_mean, torch_var = reference[f"after/{name}.running_mean"], reference[f"after/{name}.running_var"]
        assert max_diff(layer._mean.numpy(), torch_mean) < 1e-6, name
        assert max_diff(layer._mean.numpy(), before_mean) > 1e-4, name  # the statistics did move
        biased_update = m * before_var + (torch_var - m * before_var) * (n - 1) / n
        np.testing.assert_allclose(layer._variance.numpy(), biased_update, rtol=1e-5, atol=1e-6, err_msg=name)


def test_training_step_with_drop_path_and_dropout_gives_every_parameter_a_gradient():
    model = tiny_model(weights=None, drop_rate=0.2, drop_path_rate=0.2)
    model.train()
    loss = model(paddle.randn([4, 3, 40, 48])).square().mean()
    loss.backward()
    trainable = [p for p in model.parameters() if not p.stop_gradient]  # Paddle lists BN statistics too
    assert all(p.grad is not None and bool(paddle.isfinite(p.grad).all()) for p in trainable)


def test_parameter_names_are_timms(timm_state):
    model = tiny_model(weights=None)
    for key in ("stem.conv.weight", "stem.bn.weight", "stem.bn._mean", "s1.b1.conv1.conv.weight",
                "s1.b1.conv2.bn.bias", "s1.b1.se.fc1.weight", "s1.b1.se.fc2.bias", "s1.b1.downsample.conv.weight",
                "s3.b3.conv3.bn._variance", "head.fc.weight", "head.fc.bias"):
        assert key in model.state_dict(), key
    torch_keys = {k for k in timm_state if not k.endswith("num_batches_tracked")}
    assert {torch_key for torch_key, _ in torch_key_plan(model).values()} == torch_keys


def test_conversion_names_missing_unexpected_and_misshapen_keys(timm_state):
    model = tiny_model(weights=None)
    missing = {k: v for k, v in timm_state.items() if k != "s2.b1.se.fc1.bias"}
    with pytest.raises(ConversionError, match=r"missing in the source: s2\.b1\.se\.fc1\.bias"):
        convert_torch_state_dict(model, missing)
    extra = {**timm_state, "s4.b3.conv1.conv.weight": np.zeros((128, 128, 1, 1), np.float32)}
    with pytest.raises(ConversionError, match=r"unexpected in the source: s4\.b3\.conv1\.conv\.weight"):
        convert_torch_state_dict(model, extra)
    other = RegNet(**{**TINY, "group_size": 16}, num_classes=10)  # fewer groups: conv2 weights differ
    with pytest.raises(ConversionError, match=r"shape of s1\.b1\.conv2\.conv\.weight"):
        convert_torch_state_dict(other, timm_state)


def test_fine_tuning_on_other_classes_excludes_the_head():
    model = tiny_model(weights=None, num_classes=3)
    with pytest.raises(ConversionError, match=r"shape of head\.fc\.weight: source \[128, 10\], model \[128, 3\]"):
        load_weights(model, WEIGHTS)
    load_weights(model, WEIGHTS, exclude=[r"^head\."])
    assert model.head.fc.weight.shape == [128, 3]


def test_num_classes_zero_returns_pooled_features(reference):
    full = tiny_model()
    backbone = BACKBONES.get("RegNet")(**TINY, num_classes=0)
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = backbone.set_state_dict(state)
    assert not missing and not unexpected
    backbone.eval()
    assert backbone.num_features == 128
    assert max_diff(run(backbone, reference["x"]), reference["features"]) < TOL


def test_regnet_is_a_backbone_for_the_composite_classifier():
    model = build_model({
        "type": "ImageClassifier",
        "backbone": {"type": "RegNet", **TINY, "num_classes": 0},
        "head": {"type": "LinearClsHead", "in_features": 128, "num_classes": 5},
    })
    assert run(model, np.zeros((2, 3, 32, 40), np.float32)).shape == (2, 5)


def named_variants():
    return sorted(n for n in MODELS.names() if n.startswith(("regnetx_", "regnety_")))


def test_every_named_variant_has_timms_config_stages_and_parameter_count():
    with open(os.path.join(FIXTURES, "regnet_variants.json")) as f:
        expected = json.load(f)["variants"]
    assert named_variants() == sorted(expected)
    for name in named_variants():
        factory, facts = MODELS.get(name), expected[name]
        defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()}
        assert {k: defaults[k] for k in facts["cfg"]} == facts["cfg"], name
        with paddle.LazyGuard():  # shapes only: regnety_320 has 145M parameters
            model = factory()
        stages = [[s.b1.conv3.conv.weight.shape[0], len(list(s.children())), s.b1.conv2.conv._groups]
                  for s in (getattr(model, n) for n in model.stage_names)]
        assert stages == facts["stages"], name
        # Paddle's parameters() includes the BatchNorm statistics; timm's does not
        trainable = sum(math.prod(p.shape) for p in model.parameters() if not p.stop_gradient)
        assert trainable == facts["params"], name


def test_width_rule_rounds_at_ties_in_float32_like_timm():
    # 400 * 2.9**2 = 3364, /8 = 420.5 exactly in float64; in float32 (timm) it is 420.50003,
    # so the stage rounds up to 3368 and then to 15 groups of 232 = 3480 (float64 gives 3248).
    widths, depths, groups = regnet_stages(w0=400, wa=247.89, wm=2.9, depth=19, group_size=232)
    assert widths == [464, 1160, 3480] and depths == [2, 5, 12] and groups == [232, 232, 232]


def test_configs_that_do_not_give_four_stages_are_refused():
    with pytest.raises(ValueError, match="four stages"):
        RegNet(w0=16, wa=8.0, wm=2.0, depth=8, group_size=8)


def test_drop_path_rises_linearly_over_all_blocks_and_is_off_in_eval():
    model = RegNet(**TINY, num_classes=10, drop_path_rate=0.3)
    rates = [block.drop_path.drop_prob for block in model.sublayers() if isinstance(block, Bottleneck)]
    assert rates == pytest.approx([0.3 * i / 6 for i in range(7)])
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_init_is_timms():
    paddle.seed(0)
    model = RegNet(w0=48, wa=27.89, wm=2.09, depth=16, group_size=8, se_ratio=0.25)  # regnety_004
    blocks = [layer for layer in model.sublayers() if isinstance(layer, Bottleneck)]
    assert all(not b.conv3.bn.weight.numpy().any() for b in blocks)  # zero-init last BN
    assert all(b.conv2.bn.weight.numpy().min() == 1.0 for b in blocks)
    conv = model.s4.b1.conv1.conv.weight  # [440, 208, 1, 1]: fan_out 440
    assert conv.numpy().std() == pytest.approx(math.sqrt(2 / 440), rel=0.03)
    grouped = model.s4.b1.conv2.conv  # 55 groups of 8: fan_out 9 * 440 / 55
    assert grouped.weight.numpy().std() == pytest.approx(math.sqrt(2 / (9 * 440 / 55)), rel=0.03)
    assert model.head.fc.weight.numpy().std() == pytest.approx(0.01, rel=0.03)
    assert not model.head.fc.bias.numpy().any() and not model.s2.b1.se.fc1.bias.numpy().any()
    no_zero = RegNet(**TINY, zero_init_last=False)
    assert no_zero.s1.b1.conv3.bn.weight.numpy().min() == 1.0


@pytest.mark.slow
def test_export_with_free_image_size_matches_dygraph(tmp_path, reference):
    from paddle.static import InputSpec

    model = tiny_model()
    static = paddle.jit.to_static(model, input_spec=[InputSpec([None, 3, None, None], "float32")], full_graph=True)
    paddle.jit.save(static, str(tmp_path / "regnet"))
    config = paddle.inference.Config(str(tmp_path / "regnet.json"), str(tmp_path / "regnet.pdiparams"))
    config.disable_gpu()
    predictor = paddle.inference.create_predictor(config)
    for tag in ("", "_odd"):
        x = reference[f"x{tag}"]
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        predictor.run()
        out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        assert max_diff(out, run(model, x)) < TOL
        assert max_diff(out, reference[f"y{tag}"]) < TOL
