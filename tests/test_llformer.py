"""Tests for the LLFormer port (ppuhd/models/llformer.py).

The golden outputs come from the official PyTorch model with perturbed random
weights (tests/fixtures/make_llformer_fixtures.py); these tests run without torch.
"""

import json
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from ppuhd.models import llformer
from ppuhd.models.layers import cpu_has_avx512
from ppuhd.models.llformer import LLFormer, axis_attention
from ppuhd.registry import MODELS
from ppuhd.weights.convert import ConversionError, convert_torch_state_dict
from ppuhd.weights.readers import find_state_dict, read_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "llformer"
FIXTURE_NAMES = ("narrow", "variant")
TOL = 1e-5
TINY_BUDGET_MB = 1e-4  # 105 bytes: every chunk is a single row or column


def fixture_meta(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture_io(name):
    with np.load(FIXTURES / f"{name}.npz") as npz:
        return {key: npz[key] for key in npz.files}


def official_weights(name):
    return find_state_dict(read_checkpoint(FIXTURES / f"{name}.pth"), "state_dict")


def load_fixture_model(name, **overrides):
    model = LLFormer(**fixture_meta(name)["model"], **overrides)
    missing, unexpected = model.set_state_dict(convert_torch_state_dict(model, official_weights(name)))
    assert not missing and not unexpected
    model.eval()
    return model


def run(model, image, method="forward"):
    with paddle.no_grad():
        return getattr(model, method)(paddle.to_tensor(image)).numpy()


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# --------------------------------------------------------------------------
# Parity with the official model
# --------------------------------------------------------------------------


def without_fused_attention(monkeypatch):
    monkeypatch.setattr(llformer, "fused_attention_runs", lambda *args: False)


needs_fused_attention = pytest.mark.skipif(
    not cpu_has_avx512(), reason="Paddle's fused CPU attention needs AVX-512"
)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "matmul"])
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_official_checkpoint_converts_and_matches(name, fused, monkeypatch):
    if not fused:
        without_fused_attention(monkeypatch)
    io = fixture_io(name)
    model = load_fixture_model(name)
    assert sum(int(p.numel()) for p in model.parameters()) == fixture_meta(name)["num_parameters"]
    out = run(model, io["input"])
    assert out.shape == io["output"].shape
    assert max_diff(out, io["output"]) < TOL


# --------------------------------------------------------------------------
# Chunked axis attention
# --------------------------------------------------------------------------


def reference_axis_attention(q, k, v, fac, along_height):
    """The official computation in numpy: every row (column) at once, then normalise/softmax."""
    if along_height:
        q, k, v = (np.swapaxes(t, 2, 3) for t in (q, k, v))
    # (B', d, H, W) -> (B', H, W, d): rows of W tokens, as "(n nh h) w dh"
    q, k, v = (np.transpose(t, (0, 2, 3, 1)).astype(np.float64) for t in (q, k, v))
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    scores = q @ np.swapaxes(k, -1, -2) * fac
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    out = (probs / probs.sum(-1, keepdims=True)) @ v
    out = np.transpose(out, (0, 3, 1, 2))
    return np.swapaxes(out, 2, 3) if along_height else out


@pytest.mark.parametrize("along_height", [False, True])
@pytest.mark.parametrize("budget_bytes", [2**30, 1000, 1])
def test_axis_attention_matches_reference_in_any_chunking(along_height, budget_bytes):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, 5, 11, 7)).astype(np.float32) for _ in range(3))
    fac = 3.5
    with paddle.no_grad():
        out = axis_attention(
            *(paddle.to_tensor(t) for t in (q, k, v)), paddle.to_tensor([fac]), along_height, budget_bytes
        ).numpy()
    assert max_diff(out, reference_axis_attention(q, k, v, fac, along_height)) < TOL


def test_tiny_budget_chunks_and_matches_unchunked(monkeypatch):
    without_fused_attention(monkeypatch)
    calls = []
    attend = llformer._attend
    monkeypatch.setattr(llformer, "_attend", lambda *args: calls.append(args[0].shape) or attend(*args))
    image = fixture_io("narrow")["input"]
    whole = run(load_fixture_model("narrow"), image)
    whole_calls = len(calls)
    calls.clear()
    chunked = run(load_fixture_model("narrow", attn_budget_mb=TINY_BUDGET_MB), image)
    # One call per attention module unchunked; one per row or column chunked.
    assert len(calls) > 10 * whole_calls
    assert all(shape[1] == 1 for shape in calls)
    assert max_diff(chunked, whole) < TOL


@needs_fused_attention
@pytest.mark.parametrize("budget_mb", [1.0, 1e-4], ids=["whole", "row-chunks"])
def test_fused_row_attention_matches_reference(budget_mb, monkeypatch):
    monkeypatch.setattr(llformer, "FUSED_TOKENS_BUDGET_MB", budget_mb)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, 5, 11, 7)).astype(np.float32) for _ in range(3))
    fac = 3.5
    with paddle.no_grad():
        out = llformer.fused_row_attention(*(paddle.to_tensor(t) for t in (q, k, v)), paddle.to_tensor([fac])).numpy()
    assert max_diff(out, reference_axis_attention(q, k, v, fac, False)) < TOL


@needs_fused_attention
@pytest.mark.parametrize("along_height", [False, True])
def test_fused_attention_module_matches_matmul_path(along_height, monkeypatch):
    paddle.seed(0)
    layer = llformer.NextAttentionImplZ(8, 2, True, along_height)
    layer.eval()
    x = paddle.rand([2, 8, 12, 20])
    with paddle.no_grad():
        assert llformer.fused_attention_runs(x, layer)
        fused = layer(x).numpy()
        without_fused_attention(monkeypatch)
        unfused = layer(x).numpy()
    assert max_diff(fused, unfused) < TOL


def test_fused_attention_only_where_no_gradient_is_wanted():
    layer = llformer.NextAttentionImplZ(8, 2, True)
    layer.eval()
    x = paddle.rand([1, 8, 16, 16])
    assert not llformer.fused_attention_runs(x, layer)  # trainable weights
    x.stop_gradient = False
    with paddle.no_grad():
        assert llformer.fused_attention_runs(x, layer) == cpu_has_avx512()
        assert not llformer.fused_attention_runs(x.astype("float64"), layer)  # the kernel computes in float32
        layer.train()  # a recomputed block's first forward: it must round as its recomputation will
        assert not llformer.fused_attention_runs(x, layer)


def test_budget_sets_rows_per_chunk(monkeypatch):
    calls = []
    attend = llformer._attend
    monkeypatch.setattr(llformer, "_attend", lambda *args: calls.append(args[0].shape) or attend(*args))
    q = paddle.rand([2, 4, 10, 16])
    budget = 3 * 2 * 16 * 16 * 4  # scores of three rows for a batch of 2
    with paddle.no_grad():
        axis_attention(q, q, q, paddle.ones([1]), False, budget)
    assert [shape[1] for shape in calls] == [3, 3, 3, 1]


def test_chunked_gradients_match_unchunked():
    paddle.seed(3)
    config = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    whole, chunked = LLFormer(**config), LLFormer(**config, attn_budget_mb=TINY_BUDGET_MB)
    chunked.set_state_dict(whole.state_dict())
    image = paddle.rand([1, 3, 16, 32])
    grads = []
    for model in (whole, chunked):
        (model(image) ** 2).mean().backward()
        grads.append({n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert max_diff(grad, grads[1][name]) <= 1e-4 * max(np.abs(grad).max(), 1e-3), name


def test_recomputed_blocks_give_the_same_loss_and_gradients():
    paddle.seed(4)
    config = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    stored, recomputed = LLFormer(**config), LLFormer(**config, recompute=True)
    recomputed.set_state_dict(stored.state_dict())
    image = paddle.rand([2, 3, 32, 32])
    losses, grads = [], []
    for model in (stored, recomputed):
        model.train()
        loss = (model(image) - 0.5).abs().mean()
        loss.backward()
        losses.append(float(loss))
        grads.append({n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None})
    assert losses[0] == losses[1]
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for name, grad in grads[0].items():
        assert max_diff(grad, grads[1][name]) <= 1e-6 * max(np.abs(grad).max(), 1e-3), name


def test_recompute_keeps_fewer_activations_for_the_backward():
    """Saved-for-backward tensors counted by Paddle's hooks: the recomputed model keeps far fewer bytes."""
    paddle.seed(5)
    config = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)

    def saved_bytes(model):
        saved = []
        hooks = paddle.autograd.saved_tensors_hooks(lambda t: saved.append(t.size * 4) or t, lambda t: t)
        model.train()
        with hooks:
            loss = model(paddle.rand([1, 3, 64, 64])).mean()
        loss.backward()
        return sum(saved)

    stored, recomputed = saved_bytes(LLFormer(**config)), saved_bytes(LLFormer(**config, recompute=True))
    assert recomputed < 0.3 * stored, (recomputed, stored)


def test_layer_attention_stays_accurate_on_large_maps():
    """Each token has C*H*W = 1M elements here; summed naively (Paddle's CPU
    ``F.normalize``) the float32 output was 1.3e-4 off the float64 one."""
    paddle.seed(0)
    lam = llformer.LAM_Module_v2(48)
    lam.temperature.set_value(paddle.to_tensor([5.0]))
    lam64 = llformer.LAM_Module_v2(48)
    lam64.set_state_dict(lam.state_dict())
    lam64.to(dtype="float64")
    x = paddle.rand([1, 48, 256, 256])
    with paddle.no_grad():
        assert max_diff(lam(x).numpy(), lam64(x.astype("float64")).numpy()) < TOL


# --------------------------------------------------------------------------
# Padding and cropping
# --------------------------------------------------------------------------


def test_multiple_of_16_input_is_not_padded():
    model = load_fixture_model("narrow")
    image = fixture_io("narrow")["input"]
    np.testing.assert_array_equal(run(model, image), run(model, image, "forward_aligned"))


@pytest.mark.parametrize("size", [(17, 16), (16, 31), (25, 39)])
def test_other_sizes_are_reflect_padded_and_cropped(size):
    model = load_fixture_model("variant")
    image = np.random.default_rng(1).random((2, 3) + size, dtype=np.float32)
    pad = [(0, 0), (0, 0), (0, -size[0] % 16), (0, -size[1] % 16)]
    expected = run(model, np.pad(image, pad, mode="reflect"), "forward_aligned")[:, :, : size[0], : size[1]]
    out = run(model, image)
    assert out.shape == image.shape
    assert max_diff(out, expected) < TOL


# --------------------------------------------------------------------------
# Construction, registration, conversion errors
# --------------------------------------------------------------------------


def test_registered_paper_variant_has_the_official_parameter_count():
    model = MODELS.get("llformer")()
    assert sum(int(p.numel()) for p in model.parameters()) == 24_549_014
    assert MODELS.get("LLFormer") is LLFormer


def test_class_defaults_are_the_official_constructor_defaults():
    # The official constructor's own defaults (num_blocks [1, 2, 4, 8]): a smaller model.
    model = LLFormer()
    assert sum(int(p.numel()) for p in model.parameters()) == 13_151_694


def test_initialisation_follows_pytorch_defaults():
    model = LLFormer(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, attention=False)
    for name, layer in model.named_sublayers():
        if isinstance(layer, nn.Conv2D):
            bound = 1 / np.sqrt(np.prod(layer.weight.shape[1:]))
            assert np.abs(layer.weight.numpy()).max() <= bound, name
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("norm1.body.weight", "norm2.body.weight", ".fac", ".temperature")) or "coefficient" in key:
            np.testing.assert_array_equal(value.numpy(), 1.0, err_msg=key)
        if key.endswith(("norm1.body.bias", "norm2.body.bias")):
            np.testing.assert_array_equal(value.numpy(), 0.0, err_msg=key)
    # attention=False freezes the skip weights, as the original's requires_grad=attention.
    assert model.coefficient_1_0.stop_gradient and not model.encoder_1[0].attn.row_att.fac.stop_gradient


def test_conversion_fails_loudly_on_missing_unexpected_or_misshapen_keys():
    model = LLFormer(**fixture_meta("narrow")["model"])
    weights = official_weights("narrow")
    missing = dict(weights)
    del missing["encoder_1.0.attn.col_att.fac"]
    with pytest.raises(ConversionError, match=r"missing in the source: encoder_1\.0\.attn\.col_att\.fac"):
        convert_torch_state_dict(model, missing)
    with pytest.raises(ConversionError, match=r"unexpected in the source: extra\.weight"):
        convert_torch_state_dict(model, {**weights, "extra.weight": np.zeros(3, np.float32)})
    misshapen = {**weights, "output.weight": weights["output.weight"][:, :4]}
    with pytest.raises(ConversionError, match=r"shape of output\.weight"):
        convert_torch_state_dict(model, misshapen)


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_export_with_free_image_size_matches(tmp_path):
    """to_static + jit.save + Paddle Inference, H and W unknown, chunk loop in the graph."""
    from paddle.static import InputSpec

    model = load_fixture_model("narrow", attn_budget_mb=TINY_BUDGET_MB)
    static = paddle.jit.to_static(model, input_spec=[InputSpec([None, 3, None, None], "float32")], full_graph=True)
    paddle.jit.save(static, str(tmp_path / "llformer"))

    config = paddle.inference.Config(str(tmp_path / "llformer.json"), str(tmp_path / "llformer.pdiparams"))
    config.disable_gpu()
    predictor = paddle.inference.create_predictor(config)
    io = fixture_io("narrow")
    for image, expected in ((io["input"], io["output"]), (io["input_odd"], io["output_odd"])):
        handle = predictor.get_input_handle(predictor.get_input_names()[0])
        handle.reshape(list(image.shape))
        handle.copy_from_cpu(image)
        predictor.run()
        out = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
        assert out.shape == image.shape
        assert max_diff(out, expected) < TOL


@pytest.mark.parametrize("layer", ["WithBias", "BiasFree", "ffn", "lam"])
def test_inference_reuses_temporaries_with_the_same_values(layer):
    paddle.seed(0)
    if layer == "ffn":
        module = llformer.FeedForward(8, 2.66, False)
    elif layer == "lam":
        module = llformer.LAM_Module_v2(12)
    else:
        module = llformer.LayerNorm(8, layer)
    for param in module.parameters():  # not the init's ones and zeros
        param.set_value(paddle.rand(param.shape) + 0.5)
    x = paddle.rand([2, 12 if layer == "lam" else 8, 16, 24])
    trained = module(x).numpy()  # gradients wanted: plain operations
    with paddle.no_grad():
        assert llformer._temporaries_reusable()
        inferred = module(x).numpy()
    np.testing.assert_array_equal(inferred, trained)
