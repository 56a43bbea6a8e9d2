"""Tiled inference: coverage, merging, equality with full frames and with the official tiling."""

import numpy as np
import paddle
import pytest

from ppuhd import build_model
from ppuhd.engine.tiling import TiledModel, feather_window, tile_starts, tiled_forward

NARROW_UHDFOUR = {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 8, "fuse_channels": 8}


def official_tiling(image, tile, stride, run):
    """LLFormer's test_UHD.py image_to_patches + patches_to_image (uniform average), written out."""
    (th, tw), (sh, sw) = tile, stride
    height, width = image.shape[-2:]
    merged, counts = np.zeros_like(image), np.zeros_like(image)
    for top in range(0, height - th + 1, sh):
        for left in range(0, width - tw + 1, sw):
            merged[:, top : top + th, left : left + tw] += run(image[None, :, top : top + th, left : left + tw])[0]
            counts[:, top : top + th, left : left + tw] += 1
    return merged / counts


def test_tile_starts_cover_every_pixel_and_match_the_official_grid_on_uhd_frames():
    assert tile_starts(2160, 720, 360) == [0, 360, 720, 1080, 1440]  # official 4K rows
    assert tile_starts(3840, 1280, 640) == [0, 640, 1280, 1920, 2560]
    assert len(tile_starts(4320, 720, 360)) == 11 and len(tile_starts(7680, 1280, 640)) == 11  # 8K
    for length, tile, stride in [(100, 30, 20), (97, 32, 16), (50, 64, 32), (33, 33, 10)]:
        covered = np.zeros(length, bool)
        for start in tile_starts(length, tile, stride):
            covered[start : start + tile] = True
        assert covered.all(), (length, tile, stride)


def test_feather_window_is_positive_and_flat_inside():
    window = feather_window(10, 3)
    assert window.min() > 0 and window.max() == 1 and np.array_equal(window, window[::-1])
    np.testing.assert_allclose(window[:4], [0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("blend", ["average", "feather"])
def test_a_pointwise_model_gives_the_full_frame_result_with_any_tiling(blend):
    image = np.random.default_rng(0).random((3, 37, 53), dtype=np.float32)
    run = lambda tiles: tiles * 2.0 + 1.0  # noqa: E731
    out = tiled_forward(run, image, (16, 24), (10, 13), tile_batch=3, blend=blend, multiple=8)
    np.testing.assert_allclose(out, image * 2 + 1, rtol=1e-6)


def test_uniform_average_equals_the_official_merge():
    paddle.seed(0)
    conv = paddle.nn.Conv2D(3, 3, 5, padding=2)
    run = lambda tiles: conv(paddle.to_tensor(tiles)).numpy()  # noqa: E731
    image = np.random.default_rng(1).random((3, 72, 120), dtype=np.float32)  # tiles reach the border, as on UHD frames
    expected = official_tiling(image, (24, 40), (12, 20), run)
    np.testing.assert_allclose(tiled_forward(run, image, (24, 40), (12, 20), tile_batch=4), expected, atol=1e-6)
    wider = np.random.default_rng(1).random((3, 72, 128), dtype=np.float32)
    with np.errstate(invalid="ignore"):
        assert np.isnan(official_tiling(wider, (24, 40), (12, 20), run)).any()  # its last 8 columns: no tile
    assert np.isfinite(tiled_forward(run, wider, (24, 40), (12, 20))).all()


def test_one_tile_covering_the_frame_is_exactly_full_frame_inference():
    model = build_model(NARROW_UHDFOUR)
    x = paddle.to_tensor(np.random.default_rng(2).random((1, 3, 70, 90), dtype=np.float32))
    with paddle.no_grad():
        full = model(x)[0].numpy()
    tiled = TiledModel(model, tile_size=[720, 1280])(x).numpy()
    np.testing.assert_array_equal(tiled, full)


def test_tiled_model_runs_a_real_enhancer_on_a_frame_larger_than_its_tiles():
    model = build_model(NARROW_UHDFOUR)
    x = paddle.to_tensor(np.random.default_rng(3).random((2, 3, 100, 150), dtype=np.float32))
    out = TiledModel(model, tile_size=[64, 64], stride=[48, 48], tile_batch=2, blend="feather")(x)
    assert out.shape == [2, 3, 100, 150] and np.isfinite(out.numpy()).all()
    with paddle.no_grad():
        full = model(x)[0].numpy()
    assert np.abs(out.numpy() - full).mean() < 0.1  # seams aside, the same enhancement


@pytest.mark.slow
def test_llformer_demo_learns_and_validates_in_tiles(tmp_path):
    import json
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "tools/train.py", "-c", "configs/demo/llformer_demo.yml", "-o", "train.iters=40",
         "-o", "train.eval_interval=40", "-o", f"runtime.output_dir={tmp_path}"],
        cwd=repo, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads((tmp_path / "metrics.json").read_text())["history"][-1]
    assert final["psnr"] > final["input_psnr"] + 2
