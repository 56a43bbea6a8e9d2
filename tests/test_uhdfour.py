"""UHDFour: parity with the official PyTorch code, conversion, padding, export, FFT helpers.

The golden outputs come from ``tests/fixtures/make_uhdfour_fixtures.py``
(see ``tests/fixtures/README.md``).
"""

import re
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

import ppuhd.models.uhdfour as uhdfour
from ppuhd.deploy import Predictor, export_model
from ppuhd.models.uhdfour import UHDFour, irfft2_polar, irfft2_polar_matmul, rfft2_polar, rfft2_polar_matmul
from ppuhd.paddle_compat import atan2, resize_bilinear
from ppuhd.registry import MODELS
from ppuhd.weights import ConversionError, convert_torch_state_dict, find_state_dict, read_checkpoint
from ppuhd.weights.convert import torch_key_plan

FIXTURES = Path(__file__).parent / "fixtures"
UHDFOUR_FIXTURES = FIXTURES / "uhdfour"
TOL = 1e-5

# Fixture name -> Paddle model arguments equal to the official constructor's.
OFFICIAL = {
    "uhd_full": dict(factor=8, extract_channels=8, low_channels=192, fuse_channels=16, deep_high=False),
    "lol_full": dict(factor=2, extract_channels=8, low_channels=192, fuse_channels=32, deep_high=True),
    "lol_narrow": dict(factor=2, extract_channels=1, low_channels=24, fuse_channels=32, deep_high=True),  # nc=2
}
NARROW_UHD = dict(factor=8, extract_channels=4, low_channels=8)
NARROW_LOL = dict(factor=2, extract_channels=2, low_channels=8, fuse_channels=8, deep_high=True)


def _run(model, x):
    model.eval()
    with paddle.no_grad():
        y, y_down = model(paddle.to_tensor(x))
    return y.numpy(), y_down.numpy()


def _torch_style_state(model):
    """A model's own weights under their PyTorch names (no Linear layers here, so no transposes)."""
    own = model.state_dict()
    return {torch_key: own[key].numpy() for key, (torch_key, _) in torch_key_plan(model).items()}


# --------------------------------------------------------------------------
# Parity with the official model
# --------------------------------------------------------------------------


def test_named_variants_are_the_official_architectures():
    for variant, fixture_name, n_params in (("uhdfour_uhd", "uhd_full", 17_537_370), ("uhdfour_lol", "lol_full", None)):
        model = MODELS.get(variant)()
        if n_params:  # the used part of the official 33,641,978
            assert sum(int(np.prod(p.shape)) for p in model.parameters()) == n_params
        fixture = np.load(UHDFOUR_FIXTURES / f"{fixture_name}.npz")
        plan = torch_key_plan(model)
        used = {torch_key for torch_key, _ in plan.values()}
        official = set(fixture["keys"])
        assert used <= official
        # every official key the model does not build is one it declares as dead
        dropped = official - used
        patterns = [re.compile(p) for p in model.torch_ignored_keys]
        assert all(any(p.search(k) for p in patterns) for k in dropped)
        assert not any(any(p.search(k) for p in patterns) for k in used)


# --------------------------------------------------------------------------
# Conversion is strict
# --------------------------------------------------------------------------


def test_conversion_fails_on_missing_key():
    state = find_state_dict(read_checkpoint(UHDFOUR_FIXTURES / "lol_narrow.pth"))
    del state["lownet.conv3.spatial_process.block.G.norm.weight"]
    with pytest.raises(ConversionError, match="missing in the source: lownet.conv3.spatial_process.block.G.norm.weight"):
        convert_torch_state_dict(UHDFour(**OFFICIAL["lol_narrow"]), state)


def test_conversion_fails_on_unexpected_key():
    state = find_state_dict(read_checkpoint(UHDFOUR_FIXTURES / "lol_narrow.pth"))
    state["highnet.conv3.frequency_process.processmag.1.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ConversionError, match="unexpected in the source: highnet.conv3.frequency_process"):
        convert_torch_state_dict(UHDFour(**OFFICIAL["lol_narrow"]), state)


def test_ignored_keys_are_precise():
    """The UHD model drops the official dead modules, and nothing that merely looks like them."""
    model = UHDFour(**NARROW_UHD)
    state = _torch_style_state(model)
    dead = {
        "lownet.conv2.frequency_spatial.weight": (16, 16, 3, 3),
        "highnet.conv1.spatial_frequency.bias": (192,),
        "highnet.conv3.spatial_process.block.F.norm.weight": (48,),
        "highnet.conv4.frequency_process.processpha.2.weight": (192, 192, 1, 1),
        "highnet.con_temp2.bias": (16,),
    }
    convert_torch_state_dict(model, {**state, **{k: np.zeros(s, np.float32) for k, s in dead.items()}})
    for stray in ("highnet.conv3.bogus.weight", "highnet.conv2.cat.weight", "lownet.con_temp1.weight"):
        with pytest.raises(ConversionError, match="unexpected in the source: " + stray.replace(".", r"\.")):
            convert_torch_state_dict(model, {**state, stray: np.zeros(1, np.float32)})


# --------------------------------------------------------------------------
# Any input size
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch, size", [(NARROW_UHD, (61, 90)), (NARROW_LOL, (41, 57))])
def test_padding_keeps_every_pixel(arch, size):
    paddle.seed(1)
    model = UHDFour(**arch)
    f = model.factor
    x = np.random.default_rng(0).random((2, 3) + size, dtype=np.float32)
    y, y_down = _run(model, x)
    h, w = size
    assert y.shape == (2, 3, h, w)
    assert y_down.shape == (2, 3, -(-h // f), -(-w // f))

    # = the original network on the reflect-padded image, cropped back
    padded = F.pad(paddle.to_tensor(x), [0, -w % f, 0, -h % f], mode="reflect")
    with paddle.no_grad():
        y_ref, y_down_ref = model.forward_unpadded(padded)
    np.testing.assert_array_equal(y, y_ref.numpy()[:, :, :h, :w])
    np.testing.assert_array_equal(y_down, y_down_ref.numpy()[:, :, : y_down.shape[2], : y_down.shape[3]])


def test_padded_path_equals_plain_forward_on_multiples():
    paddle.seed(2)
    model = UHDFour(**NARROW_UHD)
    x = np.random.default_rng(1).random((1, 3, 64, 96), dtype=np.float32)
    y, y_down = _run(model, x)
    plain = UHDFour(**NARROW_UHD, pad_input=False)
    plain.set_state_dict(model.state_dict())
    y_plain, y_down_plain = _run(plain, x)
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_array_equal(y_down, y_down_plain)


def test_full_resolution_convs_in_stripes_are_exact(monkeypatch):
    paddle.seed(3)
    conv = paddle.nn.Conv2D(16, 3, 3, padding=1)
    x = paddle.rand([1, 16, 37, 50])
    monkeypatch.setattr(uhdfour, "_IM2COL_BYTES", 16 * 9 * 4 * 50 * 5)  # stripes of 5 rows
    np.testing.assert_allclose(uhdfour._conv3x3_in_stripes(conv, x).numpy(), conv(x).numpy(), rtol=0, atol=1e-6)


def test_init_follows_pytorch_defaults():
    model = UHDFour(**NARROW_UHD)
    block = model.lownet.conv1.spatial_process.block.F
    bound = 1 / np.sqrt(4 * 9)  # conv_1: 4 input channels, 3x3
    weight = block.conv_1.weight.numpy()
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.8 * bound
    np.testing.assert_array_equal(block.norm.scale.numpy(), np.ones(2, np.float32))
    np.testing.assert_array_equal(block.norm.bias.numpy(), np.zeros(2, np.float32))


# --------------------------------------------------------------------------
# FFT and resize helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(6, 8), (5, 9), (7, 3), (4, 1), (8, 2), (9, 10)])
def test_irfft2_polar_equals_irfft2(height, width):
    """Any half spectrum, Hermitian or not (numpy's irfft2 treats it as torch's does)."""
    rng = np.random.default_rng(height * 100 + width)
    bins = width // 2 + 1
    mag = rng.random((2, 3, height, bins), dtype=np.float32) * 5
    pha = rng.uniform(-np.pi, np.pi, (2, 3, height, bins)).astype(np.float32)
    spectrum = mag.astype(np.float64) * np.exp(1j * pha.astype(np.float64))
    expected = np.fft.irfft2(spectrum, s=(height, width))
    mag, pha = paddle.to_tensor(mag), paddle.to_tensor(pha)
    native = irfft2_polar(mag, pha, width).numpy()  # dygraph: Paddle's irfft2
    exportable = irfft2_polar(mag, pha, paddle.to_tensor(width)).numpy()  # as in an exported graph
    portable = irfft2_polar_matmul(mag, pha, width).numpy()  # as in an ONNX export
    for got in (native, exportable, portable):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("polar", [rfft2_polar, rfft2_polar_matmul], ids=["fft", "matmul"])
@pytest.mark.parametrize("height, width", [(12, 18), (6, 9), (7, 4)])
def test_rfft2_polar(height, width, polar):
    rng = np.random.default_rng(height + width)
    x = rng.standard_normal((4, 16, height, width)).astype(np.float32) - 1.0  # negative DC bins
    mag, pha = (t.numpy() for t in polar(paddle.to_tensor(x)))
    expected = np.fft.rfft2(x.astype(np.float64))
    np.testing.assert_allclose(mag, np.abs(expected), rtol=0, atol=1e-4)
    # bins that are real in exact arithmetic: imaginary part +0, so a negative one has phase +pi
    rows = [0] + ([height // 2] if height % 2 == 0 else [])
    cols = [0] + ([width // 2] if width % 2 == 0 else [])
    real = expected[:, :, rows][:, :, :, cols].real
    np.testing.assert_array_equal(pha[:, :, rows][:, :, :, cols], np.where(real < 0, np.float32(np.pi), 0))
    off = np.abs(np.angle(expected)) < 3.0  # away from the +-pi cut elsewhere
    np.testing.assert_allclose(pha[off], np.angle(expected)[off], rtol=0, atol=1e-4)


def test_portable_atan2_is_the_phase_torch_angle_gives():
    """+pi for a negative real number (y = +0 or -0: paddle2onnx's atan2 gives 0), pi/2 on the axis, 0 at 0."""
    y = np.array([0.0, -0.0, 0.0, 1.0, -1.0, 0.0, 3.0, -3.0, 1e-30, -1e-30], np.float32)
    x = np.array([-2.0, -2.0, 2.0, 0.0, 0.0, 0.0, -1e-8, -1e-8, -1.0, -1.0], np.float32)
    expected = np.array([np.pi, np.pi, 0, np.pi / 2, -np.pi / 2, 0, np.pi / 2, -np.pi / 2, np.pi, -np.pi], np.float32)
    np.testing.assert_allclose(atan2(paddle.to_tensor(y), paddle.to_tensor(x)).numpy(), expected, rtol=0, atol=1e-7)
    y, x = np.random.default_rng(0).standard_normal((2, 10000)).astype(np.float32)
    got = atan2(paddle.to_tensor(y), paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, np.arctan2(y.astype(np.float64), x), rtol=0, atol=5e-7)


@pytest.mark.parametrize("size_in, size_out", [((2, 3), (4, 6)), ((4, 6), (9, 13)), ((9, 13), (72, 104)), ((7, 5), (3, 2))])
def test_resize_bilinear_matches_interpolate(size_in, size_out):
    x = paddle.rand([2, 3, *size_in])
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_bilinear(x, size_out).numpy(), expected.numpy(), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------
# Export with run-time H and W
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch,use_onednn", [(NARROW_UHD, True), (NARROW_LOL, True), (NARROW_UHD, False)],
                         ids=["uhd", "lol", "uhd-no-onednn"])
def test_export_and_inference(arch, use_onednn, tmp_path):
    paddle.seed(4)
    model = UHDFour(**arch)
    weights = str(tmp_path / "weights.pdparams")
    paddle.save(model.state_dict(), weights)
    model.eval()
    deploy, _ = export_model({"model": {"type": "UHDFour", **arch}}, weights, str(tmp_path / "export"),
                             dynamic_size=True, input_size=(64, 96))
    assert deploy["task"] == "enhancement" and deploy["dynamic_size"]
    predictor = Predictor(str(tmp_path / "export"), use_onednn=use_onednn)  # oneDNN: as tools/infer.py runs it

    rng = np.random.default_rng(5)
    for shape in [(1, 3, 64, 96), (1, 3, 80, 72), (2, 3, 75, 70)]:  # the last one is padded
        x = rng.random(shape, dtype=np.float32)
        for got, want in zip(predictor.run(x), _run(model, x)):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
