"""tools/infer.py never destroys data: inputs kept, names unique, earlier results kept, bad files named."""

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml

from ppuhd import builder
from ppuhd.deploy import Predictor, export_model
from ppuhd.registry import MODELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_UHDFOUR = {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 16, "fuse_channels": 8}
TINY_VIT = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
            "num_heads": 2, "num_classes": 3}


def export(folder, model_cfg, val_transforms=None, sections=None, **options):
    """Export random weights of ``model_cfg``; with ``val_transforms``, a config validating with them;
    ``sections``: more of the config (e.g. ``tiling``, or a ``val_dataset`` of its own)."""
    paddle.seed(0)
    weights = str(folder / "weights.pdparams")
    paddle.save(builder.build(model_cfg, MODELS).state_dict(), weights)
    val = {"type": "ImageFolder", "root": str(folder / "none"), "transforms": val_transforms} if val_transforms else None
    export_model({"model": model_cfg, "val_dataset": val, **(sections or {})}, weights, str(folder / "export"),
                 **options)
    return str(folder / "export")


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory):
    return export(tmp_path_factory.mktemp("enhancer"), TINY_UHDFOUR, dynamic_size=True, input_size=(32, 32))


def images(folder, names, size=(24, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 80, (*size, 3), dtype=np.uint8))
    return {name: (folder / name).read_bytes() for name in names}


def infer(model_dir, *args):
    return subprocess.run([sys.executable, "tools/infer.py", "--model-dir", model_dir, *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def one_line_error(result, text):
    assert result.returncode != 0 and text in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_writing_into_the_input_folder_is_refused_and_the_inputs_are_kept(enhancer, tmp_path):
    originals = images(tmp_path / "low", ["a.png", "b.jpg"])
    one_line_error(infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "low"),
                   "is the input folder; choose another folder")
    assert {n: (tmp_path / "low" / n).read_bytes() for n in originals} == originals


def test_inputs_sharing_a_name_are_refused_before_any_work(enhancer, tmp_path):
    images(tmp_path / "low", ["a.jpg", "a.png", "a.tif", "b.png"])
    one_line_error(infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "out"),
                   f"a.jpg, a.png, a.tif would all be written as {tmp_path / 'out' / 'a.png'}")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_earlier_results_are_kept_unless_overwrite(enhancer, tmp_path):
    images(tmp_path / "low", ["a.png", "b.png"])
    out = tmp_path / "out"
    assert infer(enhancer, "--input", tmp_path / "low", "--output", out).returncode == 0
    enhanced = cv2.imread(str(out / "a.png"))
    assert enhanced.shape == (24, 40, 3)
    cv2.imwrite(str(out / "a.png"), np.zeros_like(enhanced))  # the user's edited result
    one_line_error(infer(enhancer, "--input", tmp_path / "low", "--output", out),
                   f"refusing to replace results of an earlier run ({out / 'a.png'}, {out / 'b.png'})")
    assert cv2.imread(str(out / "a.png")).max() == 0
    assert infer(enhancer, "--input", tmp_path / "low", "--output", out, "--overwrite").returncode == 0
    np.testing.assert_array_equal(cv2.imread(str(out / "a.png")), enhanced)


def test_16_bit_pngs_hold_the_predictors_output_to_the_nearest_of_65536_levels(enhancer, tmp_path):
    images(tmp_path / "low", ["a.png"])
    result = infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "out", "--bit-depth", "16")
    assert result.returncode == 0, result.stderr
    written = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (24, 40, 3)
    predictor = Predictor(enhancer)
    expected = np.clip(predictor.predict(predictor.preprocess(str(tmp_path / "low" / "a.png"))[None])[0], 0, 1)
    expected = expected.transpose(1, 2, 0)[..., ::-1]  # RGB CHW to the BGR HWC OpenCV reads
    inside = (expected > 0) & (expected < 1)
    assert inside.mean() > 0.25  # about half the values are not clipped (random weights), so the test says something
    # rounding to the nearest level: half a level, plus float32's error in scaling by 65535 (< 0.01 level)
    assert np.abs(written / 65535.0 - expected).max() <= 0.51 / 65535
    assert (written[inside] % 257 != 0).mean() > 0.9  # not 8-bit values stretched to 16 bits


def test_an_unwritable_output_folder_is_reported_before_any_image(enhancer, tmp_path):
    images(tmp_path / "low", ["a.png"])
    (tmp_path / "taken").write_text("a file where the folder should be")
    result = infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "taken" / "out")
    one_line_error(result, f"cannot create the output folder {tmp_path / 'taken' / 'out'}")
    assert "->" not in result.stdout + result.stderr  # no image was computed


def test_a_folder_run_skips_unreadable_files_on_request_and_names_them(enhancer, tmp_path):
    images(tmp_path / "low", ["a.png", "c.png"])
    (tmp_path / "low" / "b.png").write_bytes(b"truncated")
    one_line_error(infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "stop"),
                   f"cannot read image {tmp_path / 'low' / 'b.png'}: not a decodable image")
    result = infer(enhancer, "--input", tmp_path / "low", "--output", tmp_path / "out", "--on-error", "skip")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
    assert f"1 of 3 input(s) could not be read and were left out: {tmp_path / 'low' / 'b.png'}" in result.stdout


def test_a_classifier_fed_another_size_names_the_file_and_the_size(tmp_path):
    model_dir = export(tmp_path, TINY_VIT, val_transforms=[{"type": "Normalize"}, {"type": "ToCHW"}])
    images(tmp_path / "photos", ["right.png"], size=(16, 16))
    images(tmp_path / "photos", ["wide.png"], size=(16, 30))
    one_line_error(infer(model_dir, "--input", tmp_path / "photos"),
                   f"{tmp_path / 'photos' / 'wide.png'}: the model was exported for 16x16 (WxH) inputs, "
                   "and the exported preprocessing gives 30x16")
    right = infer(model_dir, "--input", tmp_path / "photos" / "right.png", "--topk", "1")
    assert right.returncode == 0 and "right.png: " in right.stdout


def test_an_export_without_a_validation_set_takes_the_models_own_preprocessing(tmp_path):
    model_dir = export(tmp_path, TINY_VIT)
    deploy = yaml.safe_load(open(os.path.join(model_dir, "deploy.yml")))
    assert deploy["transforms"] == [dict(t) for t in builder.build(TINY_VIT, MODELS).info.eval_transforms]
    assert deploy["transforms"][0] == {"type": "ResizeShort", "size": 16, "crop_ratio": 0.9,
                                       "interpolation": "bicubic", "backend": "pil"}
    images(tmp_path / "photos", ["wide.png"], size=(16, 30))
    result = infer(model_dir, "--input", tmp_path / "photos", "--topk", "1")
    assert result.returncode == 0 and "wide.png: " in result.stdout  # resized as the model's evaluation does


def test_a_wrong_or_damaged_export_folder_is_one_line_naming_it(enhancer, tmp_path):
    images(tmp_path / "low", ["a.png"])
    low = tmp_path / "low"
    one_line_error(infer(tmp_path / "nowhere", "--input", low), f"export folder {tmp_path / 'nowhere'} does not exist")
    one_line_error(infer(low / "a.png", "--input", low), f"export folder {low / 'a.png'} is a file, not a folder")
    damaged = tmp_path / "damaged"
    shutil.copytree(enhancer, damaged)
    (damaged / "model.json").write_text("{}")
    one_line_error(infer(damaged, "--input", low), f"Paddle Inference cannot load the model in {damaged}")
    (damaged / "model.onnx").write_bytes(b"not a protobuf")
    one_line_error(infer(damaged, "--input", low, "--backend", "onnxruntime"),
                   f"ONNX Runtime cannot load {damaged / 'model.onnx'}")
    (damaged / "deploy.yml").write_text("task: [enhancement")
    one_line_error(infer(damaged, "--input", low), f"{damaged / 'deploy.yml'} is not valid YAML")
