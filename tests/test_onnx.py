"""ONNX export (paddle2onnx) and ONNX Runtime inference, against the training-time (dygraph) models.

Every model family is exported with ``format: onnx`` and run by ONNX Runtime;
its outputs must equal the dygraph model's within 1e-4. The enhancers are
exported for fixed tiles in their portable form (UHDFour's FFTs as matrix
products, LLFormer's attention chunks unrolled), and ``ppuhd infer
--backend onnxruntime`` must write the image the Paddle backend writes.
Inputs of the enhancers are crops of real photographs, darkened.
"""

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import paddle
import pytest
import yaml
from test_infer import infer, one_line_error  # tools/infer.py in a subprocess

from ppuhd import builder
from ppuhd.commands import infer as infer_command
from ppuhd.deploy import (BackendError, ExportFolderError, OnnxConversionError, OnnxPredictor, Predictor,
                          convert_to_onnx, create_predictor, export_model)
from ppuhd.engine.runtime import gpu_available
from ppuhd.registry import MODELS, ConfigError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
PHOTO = FIXTURES / "data_alignment" / "astronaut_517x383.jpg"
TOL = 1e-4

TINY_VIT = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
            "num_heads": 2, "num_classes": 3}
TINY_DEIT = {**TINY_VIT, "type": "DistilledVisionTransformer", "eval_head": "all"}  # (average, class, distillation)
NARROW_UHD = {"type": "UHDFour", "factor": 8, "extract_channels": 4, "low_channels": 8}
OFFICIAL_LOL_NARROW = {"type": "UHDFour", "factor": 2, "extract_channels": 1, "low_channels": 24, "fuse_channels": 32,
                       "deep_high": True}  # tests/fixtures/uhdfour/lol_narrow.pth
NARROW_LLFORMER = {"type": "LLFormer", "dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                   "heads": [1, 2, 4, 8],  # tests/fixtures/llformer/narrow.pth
                   "attn_budget_mb": 0.04}  # at 16x32: the rows of the full-resolution maps in 2 chunks (10 + 6 rows)


def low_light_photo(height, width, top=100, left=150):
    """A crop of a real photograph, darkened to a third, as a float32 CHW array in [0, 1]."""
    image = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)[top : top + height, left : left + width]
    return (image.astype(np.float32) / 255 / 3).transpose(2, 0, 1)


def random_weights(folder, model_cfg):
    paddle.seed(0)
    path = str(folder / "weights.pdparams")
    paddle.save(builder.build(model_cfg, MODELS).state_dict(), path)
    return path


def export_onnx(folder, model_cfg, weights=None, **config):
    """``ppuhd export --format onnx`` of ``model_cfg`` (random weights unless given); (export dir, dygraph model)."""
    weights = weights or random_weights(folder, model_cfg)
    _, model = export_model({"model": model_cfg, **config}, str(weights), str(folder / "export"),
                            export_format="onnx")
    return str(folder / "export"), model


def dygraph_outputs(model, batch):
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(batch))
    return [t.numpy() for t in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def onnx_op_types(model_dir):
    return {node.op_type for node in onnx.load(os.path.join(model_dir, "model.onnx")).graph.node}


@pytest.mark.parametrize("model_cfg", [TINY_VIT, TINY_DEIT], ids=["vit", "deit-both-heads"])
def test_classifiers_in_onnxruntime_equal_dygraph(model_cfg, tmp_path):
    model_dir, model = export_onnx(tmp_path, model_cfg, export={"input_size": [16, 16]})
    batch = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    expected = dygraph_outputs(model, batch)
    got = OnnxPredictor(model_dir).run(batch)
    assert len(got) == len(expected) == (3 if model_cfg is TINY_DEIT else 1)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=0, atol=TOL)
    deploy = yaml.safe_load(Path(model_dir, "deploy.yml").read_text())
    assert deploy["format"] == "onnx" and deploy["input_size"] == [16, 16] and deploy["tile_size"] is None


# name: (model, weights (None: random), tile, also run the portable graph in Paddle Inference)
ENHANCERS = {
    "uhdfour-uhd": (NARROW_UHD, None, (64, 96), True),
    "uhdfour-lol": (OFFICIAL_LOL_NARROW, FIXTURES / "uhdfour" / "lol_narrow.pth", (32, 48), True),
    "llformer": (NARROW_LLFORMER, FIXTURES / "llformer" / "narrow.pth", (16, 32), False),  # 10 s more for Paddle
}


@pytest.mark.parametrize("name", list(ENHANCERS))
def test_enhancers_exported_for_fixed_tiles_equal_dygraph(name, tmp_path):
    """The portable graph (no FFT, no loop) in ONNX Runtime and in Paddle Inference, against the eager model."""
    model_cfg, weights, tile, also_paddle = ENHANCERS[name]
    model_dir, model = export_onnx(tmp_path, model_cfg, weights, tiling={"tile_size": list(tile)})
    deploy = yaml.safe_load(Path(model_dir, "deploy.yml").read_text())
    assert deploy["format"] == "onnx" and deploy["tile_size"] == list(tile) and not deploy["dynamic_size"]
    assert not onnx_op_types(model_dir) & {"Loop", "DFT", "Atan2"}  # unrolled chunks; DFT and phase from real ops
    batch = np.stack([low_light_photo(*tile), low_light_photo(*tile, top=250, left=60)])
    expected = dygraph_outputs(model, batch)  # eager: Paddle's FFTs, the chunk loop
    for predictor in [OnnxPredictor(model_dir)] + ([Predictor(model_dir)] if also_paddle else []):
        got = predictor.run(batch)
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def tiled_uhdfour(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiled")
    return export_onnx(folder, NARROW_UHD, tiling={"tile_size": [48, 64], "stride": [24, 40]})


def test_tiled_inference_in_onnxruntime_writes_the_paddle_backends_image(tiled_uhdfour, tmp_path):
    model_dir, model = tiled_uhdfour
    frame = low_light_photo(100, 150)  # 3 x 4 tiles of 48x64
    (tmp_path / "low").mkdir()
    cv2.imwrite(str(tmp_path / "low" / "frame.png"), cv2.cvtColor(np.round(frame.transpose(1, 2, 0) * 255).astype(
        np.uint8), cv2.COLOR_RGB2BGR))
    images = {}
    for backend in ("onnxruntime", "paddle"):
        result = infer(model_dir, "--input", tmp_path / "low", "--output", tmp_path / backend, "--backend", backend)
        assert result.returncode == 0, result.stderr
        images[backend] = cv2.imread(str(tmp_path / backend / "frame.png")).astype(int)
    assert images["onnxruntime"].shape == (100, 150, 3)
    difference = np.abs(images["onnxruntime"] - images["paddle"])
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001  # the same up to a rare rounding of 8 bits
    assert images["onnxruntime"].std() > 5  # an image, not a constant


def test_a_frame_smaller_than_the_tile_is_padded_to_it(tiled_uhdfour):
    """As the model pads itself: reflect at the bottom and right, then the output cropped back."""
    model_dir, model = tiled_uhdfour
    frame = low_light_photo(40, 50)[None]
    padded = np.pad(frame, [(0, 0), (0, 0), (0, 8), (0, 14)], mode="reflect")
    expected = dygraph_outputs(model, padded)[0][:, :, :40, :50]
    np.testing.assert_allclose(OnnxPredictor(model_dir).predict(frame), expected, rtol=0, atol=TOL)


def infer_arguments(*argv):
    parser = argparse.ArgumentParser()
    infer_command.add_arguments(parser)
    return parser.parse_args(["--model-dir", "unused", "--input", "unused", *map(str, argv)])


def test_a_fixed_tile_export_refuses_other_tiles_and_full_frames(tiled_uhdfour, tmp_path):
    model_dir, _ = tiled_uhdfour
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((60, 70, 3), np.uint8))
    one_line_error(infer(model_dir, "--input", tmp_path / "a.png", "--output", tmp_path / "out", "--full-frame"),
                   "--full-frame: this export runs tiles of exactly 48 64 (H W)")
    deploy = yaml.safe_load(Path(model_dir, "deploy.yml").read_text())
    with pytest.raises(BackendError, match="--tile-size 32 32: this export runs tiles of exactly 48 64"):
        infer_command.tiling_options(deploy, infer_arguments("--tile-size", 32, 32))
    assert infer_command.tiling_options(deploy, infer_arguments("--tile-stride", 16, 16))["stride"] == [16, 16]


def test_paddle_inference_options_are_errors_where_they_cannot_apply(tiled_uhdfour):
    model_dir, _ = tiled_uhdfour
    with pytest.raises(BackendError, match="--tensorrt: Paddle Inference options; ONNX Runtime takes only"):
        infer_command.predictor_options(infer_arguments("--tensorrt"), "onnxruntime")
    if gpu_available():
        return
    with pytest.raises(BackendError, match="--gpu-id, --tensorrt, --precision fp16: GPU options, and this run is on "
                                           "the CPU"):
        Predictor(model_dir, gpu_id=0, tensorrt=True, precision="fp16")
    with pytest.raises(BackendError, match="--device gpu: Paddle sees no GPU here"):
        Predictor(model_dir, device="gpu")


def test_onnx_export_refuses_free_sizes_and_onnxruntime_needs_an_onnx_export(tmp_path):
    with pytest.raises(ConfigError, match="ONNX exports have a fixed input size"):
        export_model({"model": NARROW_UHD}, "never read", str(tmp_path / "onnx"), dynamic_size=True,
                     export_format="onnx")
    with pytest.raises(ExportFolderError, match="model.onnx not found: export the model with ppuhd export --format onnx"):
        create_predictor(str(tmp_path), "onnxruntime")


def test_a_graph_paddle2onnx_cannot_convert_is_one_clear_error(tmp_path):
    """paddle2onnx 2.1 has no ``diagonal`` and aborts its process on it: reported, not a crash."""

    class Diagonal(paddle.nn.Layer):
        def forward(self, x):
            return paddle.diagonal(x, axis1=-2, axis2=-1)

    static = paddle.jit.to_static(Diagonal(), input_spec=[paddle.static.InputSpec([None, 3, 4, 4], "float32")],
                                  full_graph=True)
    paddle.jit.save(static, str(tmp_path / "model"))
    with pytest.raises(OnnxConversionError, match="paddle2onnx could not convert .*unsupported operators"):
        convert_to_onnx(str(tmp_path))
    assert not any(name.startswith("model.onnx") for name in os.listdir(tmp_path))  # no partial file left


def test_the_app_serves_an_onnx_export_through_onnx_runtime(tmp_path):
    from ppuhd.deploy.app import ModelCatalog

    model_dir, model = export_onnx(tmp_path, TINY_VIT)
    served = ModelCatalog(str(tmp_path / "work"), device="cpu").add_export(model_dir)
    assert isinstance(served.predictor, OnnxPredictor)
    batch = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype("float32")
    np.testing.assert_allclose(served.predictor.predict(batch), dygraph_outputs(model, batch)[0], atol=TOL)
