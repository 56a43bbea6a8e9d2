"""ViT against timm: conversion, logits, position-embedding resizing, variants."""

import json
import math
import os

import numpy as np
import paddle
import pytest

from ppuhd import build_model, load_weights
from ppuhd.models import vit
from ppuhd.models.layers import cpu_has_avx512
from ppuhd.registry import MODELS

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "vit")
SMALL = dict(type="VisionTransformer", patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "vit_tiny_timm.npz"))


def small_vit(img_size):
    return build_model({**SMALL, "img_size": img_size}, weights=os.path.join(FIXTURES, "vit_tiny_timm.pth"))


def logits(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


def test_weights_load_into_a_model_built_for_another_size(reference):
    model = small_vit(48)  # the checkpoint's pos_embed is for a 4x4 grid; this model has 6x6
    assert np.abs(model.pos_embed.numpy() - reference["pos_embed_resized"]).max() < 1e-6
    assert np.abs(logits(model, reference["x_resized"]) - reference["y_resized"]).max() < 1e-5


def test_class_token_row_is_kept_apart_when_resizing():
    model = small_vit(48)
    source = np.load(os.path.join(FIXTURES, "vit_tiny_timm.npz"))["pos_embed_resized"]
    assert model.pos_embed.shape == [1, 1 + 36, 48]
    np.testing.assert_array_equal(model.pos_embed.numpy()[:, :1], source[:, :1])


def test_every_named_variant_has_timms_parameter_count():
    with open(os.path.join(FIXTURES, "vit_param_counts.json")) as f:
        expected = json.load(f)["counts"]
    names = [n for n in MODELS.names() if n.startswith("vit_")]
    assert sorted(names) == sorted(expected)
    for name in names:
        with paddle.LazyGuard():  # shapes only; no memory for ViT-H's weights
            model = MODELS.get(name)()
        assert sum(math.prod(p.shape) for p in model.parameters()) == expected[name], name


def test_parameter_names_are_timms():
    state = build_model({**SMALL, "img_size": 32}).state_dict()
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.bias",
                "blocks.0.mlp.fc2.weight", "norm.weight", "head.bias"):
        assert key in state


def test_drop_path_rises_linearly_and_is_off_in_eval():
    model = MODELS.get("VisionTransformer")(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3,
                                             drop_path_rate=0.2)
    rates = [block.drop_path1.drop_prob for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_input_not_divisible_by_patch_size_is_refused_at_build():
    with pytest.raises(Exception, match="not a multiple of patch_size"):
        build_model({**SMALL, "img_size": 30})


def test_load_weights_names_missing_unexpected_and_mismatched_keys(tmp_path):
    model = build_model({**SMALL, "img_size": 32})
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    del state["head.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["norm.weight"] = np.zeros(5, np.float32)
    path = str(tmp_path / "bad.pdparams")
    paddle.save(state, path)
    before = model.norm.weight.numpy().copy()
    with pytest.raises(ValueError) as err:
        load_weights(model, path)
    message = str(err.value)
    assert "missing: head.bias" in message and "unexpected: extra.weight" in message
    assert "norm.weight: file [5], model [48]" in message
    np.testing.assert_array_equal(model.norm.weight.numpy(), before)  # nothing half-loaded


def test_exclude_keeps_the_head_for_fine_tuning_on_other_classes(tmp_path):
    model = build_model({**SMALL, "img_size": 32, "num_classes": 4})
    head_before = model.head.weight.numpy().copy()
    load_weights(model, os.path.join(FIXTURES, "vit_tiny_timm.pth"), exclude=[r"^head\."])
    np.testing.assert_array_equal(model.head.weight.numpy(), head_before)
    reference = build_model({**SMALL, "img_size": 32}, weights=os.path.join(FIXTURES, "vit_tiny_timm.pth"))
    np.testing.assert_array_equal(model.blocks[0].attn.qkv.weight.numpy(),
                                  reference.blocks[0].attn.qkv.weight.numpy())


def test_training_linear_matches_paddle_linear_in_values_and_gradients():
    from ppuhd.paddle_compat import Linear

    paddle.seed(0)
    ours, plain = Linear(24, 12), paddle.nn.Linear(24, 12)
    plain.set_state_dict(ours.state_dict())
    x = paddle.rand([3, 7, 24])
    weights = paddle.rand([3, 7, 12])
    outputs = []
    for layer in (ours, plain):
        y = layer(x)
        (y * weights).sum().backward()
        outputs.append(y.numpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_allclose(ours.bias.grad.numpy(), plain.bias.grad.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.weight.grad.numpy(), plain.weight.grad.numpy(), rtol=1e-6, atol=1e-6)
    with paddle.no_grad():  # inference adds the bias as a product too: the same values
        np.testing.assert_array_equal(ours(x).numpy(), plain(x).numpy())


@pytest.mark.skipif(not cpu_has_avx512(), reason="Paddle's fused CPU attention needs AVX-512")
def test_eval_attention_runs_fused_and_matches_the_matmul_path(reference, monkeypatch):
    model = small_vit(32)
    model.eval()
    x = paddle.to_tensor(reference["x_native"])
    with paddle.no_grad():
        assert vit.fused_attention_runs(x, model.blocks[0].attn)
        fused = model(x).numpy()
        monkeypatch.setattr(vit, "fused_attention_runs", lambda *args: False)
        unfused = model(x).numpy()
    assert np.abs(fused - unfused).max() < 1e-5
    assert np.abs(fused - reference["y_native"]).max() < 1e-5


def test_attention_takes_the_matmul_path_where_gradients_flow():
    model = build_model({**SMALL, "img_size": 32})
    model.eval()
    x = paddle.rand([1, 3, 32, 32])
    assert not vit.fused_attention_runs(x, model.blocks[0].attn)  # trainable weights: the kernel has no backward
    model.train()
    with paddle.no_grad():
        assert not vit.fused_attention_runs(x, model.blocks[0].attn)
