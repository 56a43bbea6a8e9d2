"""Tiled inference: coverage, merging, seams, equality with full frames and with the official tiling."""

import cv2
import numpy as np
import paddle
import pytest

from ppuhd import build_model
from ppuhd.config import TilingOptions
from ppuhd.contract import model_info, select_output
from ppuhd.deploy import create_predictor, export_model
from ppuhd.engine.tiling import TiledModel, feather_windows, ramp, tile_starts, tiled_forward, tiling_arguments
from ppuhd.registry import ConfigError

NARROW_UHDFOUR = {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 8, "fuse_channels": 8}
NARROW_LLFORMER = {"type": "LLFormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                   "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2.66, "bias": False, "LayerNorm_type": "WithBias",
                   "attention": True, "skip": False}  # the demo's LLFormer
# A 112x176 frame in 64x80 tiles every 32x40: the last row and column of tiles are snapped back to the
# border (starts 0, 32, 48 and 0, 40, 80, 96), so some overlaps are wider than tile minus stride.
FRAME, TILE, STRIDE = (112, 176), (64, 80), (32, 40)


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


def test_feather_windows_crossfade_over_each_overlap_and_stay_flat_at_the_image_border():
    starts = tile_starts(176, 80, 40)
    assert starts == [0, 40, 80, 96]  # the last tile snapped back: 64 pixels of overlap instead of 40
    windows = feather_windows(starts, 80)
    assert all(window.min() > 0 for window in windows)
    assert windows[0][0] == 1 and windows[-1][-1] == 1  # the image's own borders: no neighbour to fade into
    assert windows[1][0] < 2e-3 and windows[1][-1] < 2e-3  # inner edges, where the model saw padding: ~0
    np.testing.assert_allclose(windows[0][40:] + windows[1][:40], 1, atol=1e-6)  # a crossfade over the overlap
    np.testing.assert_allclose(windows[3][:64], ramp(64))  # the snapped tile fades in over all 64 pixels
    np.testing.assert_allclose(windows[2][40:], ramp(64)[::-1][24:])  # ...and its neighbour out over them
    assert windows[3][63] < 1 and windows[3][64] == 1
    np.testing.assert_allclose(ramp(5) + ramp(5)[::-1], 1, atol=1e-6)


def test_feather_is_the_default_blend_of_configs_exports_and_the_library():
    assert TilingOptions().blend == "feather"
    assert tiling_arguments({"tile_size": [64, 64]})["blend"] == "feather"  # a config or deploy.yml saying nothing
    assert tiled_forward.__defaults__[tiled_forward.__code__.co_varnames.index("blend") - 3] == "feather"


def test_a_stride_larger_than_the_tile_is_refused():
    with pytest.raises(ConfigError, match="gaps"):
        tiled_forward(lambda tiles: tiles, np.zeros((3, 64, 64), np.float32), (16, 16), (20, 20))


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
    merged = tiled_forward(run, image, (24, 40), (12, 20), tile_batch=4, blend="average")
    np.testing.assert_allclose(merged, expected, atol=1e-6)
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
        [sys.executable, "tools/train.py", "-c", "configs/demo/llformer_demo.yml", "-o", "train.iters=80",
         "-o", "train.eval_interval=80", "-o", f"runtime.output_dir={tmp_path}"],
        cwd=repo, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads((tmp_path / "metrics.json").read_text())["history"][-1]
    assert final["psnr"] > final["input_psnr"] + 2  # 80 steps: +3.3 dB on the four photographs (AMD EPYC)


def smooth_frame(seed=0):
    """A smooth 3-channel frame in [0, 0.3] (dark), so the model's own texture is the only detail."""
    rng = np.random.default_rng(seed)
    planes = [cv2.resize(rng.random((4, 5)).astype(np.float32), FRAME[::-1], interpolation=cv2.INTER_CUBIC)
              for _ in range(3)]
    return (np.clip(np.stack(planes), 0, 1) * 0.3).astype(np.float32)


def seam_ratios(tiled, full):
    """For rows and columns: the largest jump across a tile border of what tiling changed (the tiled
    output minus the full-frame one), over the 95th percentile of its jumps between neighbouring pixels
    away from the borders. Above 1, a border jumps more than nearly anywhere else: a seam shows."""
    change, ratios = tiled - full, []
    for axis, length, tile, stride in ((1, FRAME[0], TILE[0], STRIDE[0]), (2, FRAME[1], TILE[1], STRIDE[1])):
        jumps = np.abs(np.diff(change, axis=axis)).mean(axis=(0, 3 - axis))  # jumps[k]: between k and k + 1
        starts = tile_starts(length, tile, stride)
        borders = sorted({s for s in starts if s > 0} | {s + tile for s in starts if s + tile < length})
        near = np.zeros(len(jumps), bool)
        for border in borders:
            near[max(border - 3, 0) : border + 2] = True
        ratios.append(jumps[[b - 1 for b in borders]].max() / np.percentile(jumps[~near], 95))
    return ratios


def tiled_and_full(run, multiple):
    frame = smooth_frame()
    full = run(frame[None])[0]
    return {blend: tiled_forward(run, frame, TILE, STRIDE, tile_batch=4, blend=blend, multiple=multiple)
            for blend in ("average", "feather")}, full


@pytest.mark.parametrize("model_cfg", [NARROW_UHDFOUR, NARROW_LLFORMER], ids=["UHDFour", "LLFormer"])
def test_feathered_tiles_leave_no_seam_where_averaged_tiles_do(model_cfg):
    paddle.seed(0)
    model = build_model(model_cfg)  # randomly initialised: its output still depends on context
    info = model_info(model)

    def run(tiles):
        with paddle.no_grad():
            return select_output(model(paddle.to_tensor(tiles)), info.primary_output).numpy()

    merged, full = tiled_and_full(run, info.input_multiple)
    assert np.abs(merged["average"] - full).mean() > 1e-3  # context matters: tiles differ from the full frame
    assert max(seam_ratios(merged["feather"], full)) < 1.25
    assert min(seam_ratios(merged["average"], full)) > 1.75  # the official merge shows its tile borders


def test_an_exported_enhancer_tiles_seamlessly_by_default(tmp_path):
    paddle.seed(0)
    weights = str(tmp_path / "weights.pdparams")
    paddle.save(build_model(NARROW_UHDFOUR).state_dict(), weights)
    cfg = {"model": NARROW_UHDFOUR, "tiling": {"tile_size": list(TILE), "stride": list(STRIDE)}}  # no blend said
    export_model(cfg, weights, str(tmp_path / "export"))  # fixed 64x80 tiles
    predictor = create_predictor(str(tmp_path / "export"))
    tiling = tiling_arguments(predictor.deploy["tiling"], predictor.deploy.get("input_multiple", 1))
    assert tiling["blend"] == "feather"
    frame = smooth_frame()
    tiled = tiled_forward(predictor.predict, frame, **tiling)
    averaged = tiled_forward(predictor.predict, frame, **{**tiling, "blend": "average"})
    with paddle.no_grad():
        full = build_model(NARROW_UHDFOUR, weights=weights)(paddle.to_tensor(frame[None]))[0].numpy()[0]
    assert max(seam_ratios(tiled, full)) < 1.25 and min(seam_ratios(averaged, full)) > 1.75
