"""Enhancement data, losses and metrics, against the official code and scikit-image."""

import csv
import os

import cv2
import numpy as np
import paddle
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ppuhd import builder
from ppuhd.data.base import SampleKey
from ppuhd.data.demo import DemoLowLight
from ppuhd.data.image_io import ImageReadError
from ppuhd.data.paired import LOL, UHDLL, PairedImageFolder, SyntheticLowLight
from ppuhd.data.transforms import CropToMultiple, RandomCrop
from ppuhd.losses.enhancement import VGG19Features, vgg19_layer_index
from ppuhd.metrics.image_quality import ImageQuality, quantize
from ppuhd.engine.reports import PREVIEW_COLUMNS, PreviewCollector, column_header
from ppuhd.registry import LOSSES

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "enhancement")


def save(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1] if rgb.ndim == 3 else rgb)


def make_pairs(root, names=("a", "b", "c"), size=(20, 16), input_ext=".jpg", target_ext=".png"):
    rng = np.random.default_rng(0)
    for name in names:
        save(root / "input" / f"{name}{input_ext}", rng.integers(0, 60, (*size, 3), dtype=np.uint8))
        save(root / "gt" / f"{name}{target_ext}", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


# ------------------------------------------------------------------ datasets
def test_pairs_match_by_file_stem_without_a_list_file(tmp_path):
    make_pairs(tmp_path / "UHD-LL" / "testing_set")
    dataset = UHDLL(str(tmp_path / "UHD-LL"), split="test")
    assert len(dataset) == 3 and dataset.name(1) == "b.jpg"
    sample = dataset[0]
    assert sample["image"].dtype == np.float32 and sample["image"].shape == sample["target"].shape == (20, 16, 3)
    assert 0 <= sample["image"].min() and sample["target"].max() <= 1


def test_unpaired_images_are_named_or_skipped(tmp_path):
    root = make_pairs(tmp_path / "set")
    save(root / "input" / "lonely.png", np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"unpaired images: .*lonely.png has no target"):
        PairedImageFolder(str(root / "input"), str(root / "gt"))
    assert len(PairedImageFolder(str(root / "input"), str(root / "gt"), on_error="skip")) == 3


def test_size_mismatch_and_corrupt_files_name_the_file(tmp_path):
    root = make_pairs(tmp_path / "set")
    save(root / "gt" / "b.png", np.zeros((21, 16, 3), np.uint8))
    (root / "input" / "c.jpg").write_bytes(b"broken")
    dataset = PairedImageFolder(str(root / "input"), str(root / "gt"))
    with pytest.raises(ImageReadError, match=r"b.jpg: size 16x20 differs from its target .*b.png \(16x21\)"):
        dataset[1]
    with pytest.raises(ImageReadError, match="c.jpg"):
        dataset[2]
    lenient = PairedImageFolder(str(root / "input"), str(root / "gt"), on_error="skip")
    assert int(lenient[1]["skipped"]) == 2 and int(lenient[1]["index"]) == 0


def test_lol_layout_and_16_bit_and_gray_pairs(tmp_path):
    deep = (np.arange(20 * 16 * 3).reshape(20, 16, 3) * 97 % 65536).astype(np.uint16)
    save(tmp_path / "our485" / "low" / "1.png", deep)
    save(tmp_path / "our485" / "high" / "1.png", (deep[..., 0] // 256).astype(np.uint8))
    sample = LOL(str(tmp_path), "train")[0]
    np.testing.assert_allclose(sample["image"], deep / 65535.0, atol=1e-7)
    assert sample["target"].shape == (20, 16, 3)


def test_synthetic_low_light_is_fixed_in_evaluation_and_new_each_training_epoch(tmp_path):
    dataset = DemoLowLight("val", root=str(tmp_path), image_size=32, train_images=2, val_images=2)
    first, again = dataset[SampleKey(0)], dataset[SampleKey(0)]
    np.testing.assert_array_equal(first["image"], again["image"])
    other_epoch = dataset[SampleKey(0, epoch=1)]
    assert not np.array_equal(first["image"], other_epoch["image"])
    assert first["image"].mean() < 0.6 * first["target"].mean()  # darker
    plain = SyntheticLowLight(os.path.dirname(dataset.paths[0]))
    np.testing.assert_array_equal(plain[SampleKey(0)]["target"], first["target"])


def test_paired_crop_and_crop_to_multiple():
    image = np.random.default_rng(0).random((21, 30, 3)).astype(np.float32)
    sample = RandomCrop(8)({"image": image, "target": image.copy()}, np.random.default_rng(1))
    np.testing.assert_array_equal(sample["image"], sample["target"])
    assert sample["image"].shape == (8, 8, 3)
    cropped = CropToMultiple(8)({"image": image, "target": image})
    assert cropped["image"].shape == (16, 24, 3) and np.array_equal(cropped["image"], image[:16, :24])


# -------------------------------------------------------------------- losses
@pytest.fixture(scope="module")
def official():
    return np.load(os.path.join(FIXTURES, "losses.npz"))


def test_target_is_downscaled_like_the_official_bilinear_interpolate(official):
    resized = paddle.nn.functional.interpolate(paddle.to_tensor(official["target"]), size=[8, 6], mode="bilinear")
    np.testing.assert_allclose(resized.numpy(), official["target_down"], atol=1e-6)


def test_vgg_layer_names_index_torchvision_features():
    assert vgg19_layer_index("conv4_4") == 25 and vgg19_layer_index("relu5_4") == 35
    assert vgg19_layer_index("conv1_1") == 0 and vgg19_layer_index("relu2_2") == 8
    assert len(VGG19Features("conv4_4").features) == 26  # the official features[0:26]
    with pytest.raises(ValueError, match="no layer 'conv6_1'"):
        vgg19_layer_index("conv6_1")


def test_combined_loss_term_errors():
    with pytest.raises(ValueError, match="term 0 must have 'loss'"):
        builder.build({"type": "CombinedLoss", "terms": [{"weigth": 1.0, "loss": {"type": "L1Loss"}}]}, LOSSES)


# ------------------------------------------------------------------- metrics
@pytest.mark.parametrize("shape", [(48, 40, 3), (37, 53, 3)])
def test_metrics_equal_scikit_image_in_both_conventions(shape):
    rng = np.random.default_rng(1)
    target = rng.random(shape).astype(np.float32)
    output = (target + rng.normal(0, 0.08, shape)).astype(np.float32)  # unclamped, as the model gives it
    metric = ImageQuality("uhdfour")
    metric.update(paddle.to_tensor(output.transpose(2, 0, 1)[None]), paddle.to_tensor(target.transpose(2, 0, 1)[None]))
    (record,) = metric.per_image()
    assert record["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((output.astype(np.float64) - target) ** 2)),
                                           abs=1e-6)
    assert record["ssim"] == pytest.approx(structural_similarity(output, target, data_range=1, channel_axis=-1),
                                           abs=1e-6)
    assert record["mae"] == pytest.approx(np.abs(output.astype(np.float64) - target).mean(), abs=1e-6)

    metric = ImageQuality("llformer")
    metric.update(paddle.to_tensor(output.transpose(2, 0, 1)[None]), paddle.to_tensor(target.transpose(2, 0, 1)[None]))
    (record,) = metric.per_image()
    saved_output, saved_target = quantize(output), quantize(target)  # what LLFormer writes and reads back
    assert record["psnr"] == pytest.approx(peak_signal_noise_ratio(saved_target, saved_output), abs=1e-6)
    assert record["ssim"] == pytest.approx(structural_similarity(saved_output, saved_target, channel_axis=-1), abs=1e-6)
    assert record["mae"] == pytest.approx(np.abs(saved_output / 255.0 - saved_target / 255.0).mean(), abs=1e-6)


def test_quantize_rounds_half_to_even_like_img_as_ubyte():
    from skimage import img_as_ubyte

    values = np.array([0.5, 1.5, 2.5, 127.5, 254.5], dtype=np.float32) / 255
    np.testing.assert_array_equal(quantize(values), img_as_ubyte(values))
    np.testing.assert_array_equal(quantize(np.array([-0.2, 1.3], np.float32)), [0, 255])


def test_metric_averages_over_images_and_names_its_outputs():
    metric = ImageQuality("uhdfour", measures=("psnr",), output_index=1, prefix="down_")
    rng = np.random.default_rng(2)
    target = paddle.to_tensor(rng.random((3, 3, 16, 16)).astype(np.float32))
    low = paddle.to_tensor(rng.random((3, 3, 16, 16)).astype(np.float32))
    metric.update((paddle.zeros_like(target), low), target)
    per_image = [r["down_psnr"] for r in metric.per_image()]
    assert metric.compute(metric.sums()) == {"down_psnr": pytest.approx(np.mean(per_image))}
    assert metric.names == ["down_psnr"]


@pytest.mark.slow
def test_uhdfour_demo_trains_evaluates_exports_and_enhances(tmp_path):
    """The enhancement path end to end with the tools: the output gets clearly closer to the target."""
    import json
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = "configs/demo/uhdfour_demo.yml"

    def tool(*args):
        result = subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = tmp_path / "run"
    tool("tools/train.py", "-c", config, "-o", "train.iters=100", "-o", "train.eval_interval=100",
         "-o", f"runtime.output_dir={out}")
    final = json.loads((out / "metrics.json").read_text())["history"][-1]
    assert final["psnr"] > final["input_psnr"] + 2.5  # 100 steps: +3.5 dB on the four photographs (Intel Xeon), +3.2 (AMD EPYC)
    assert (out / "previews" / "step_000100.png").is_file()

    tool("tools/eval.py", "-c", config, "--weights", str(out / "checkpoints" / "best"), "--save-images",
         "--output-dir", str(tmp_path / "eval"))
    with open(tmp_path / "eval" / "per_image.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "psnr", "ssim", "input_psnr", "input_ssim", "note"] and len(rows) == 1 + 4 + 1  # the four demo photographs
    assert float(rows[-1][1]) == pytest.approx(final["psnr"], abs=1e-4)
    assert sorted(os.listdir(tmp_path / "eval" / "images")) == [row[0] for row in rows[1:-1]]

    tool("tools/export.py", "-c", config, "--weights", str(out / "checkpoints" / "best"),
         "--output", str(tmp_path / "export"))
    low = tmp_path / "low"
    save(low / "odd.png", (np.random.default_rng(0).random((70, 90, 3)) * 60).astype(np.uint8))
    tool("tools/infer.py", "--model-dir", str(tmp_path / "export"), "--input", str(low),
         "--output", str(tmp_path / "enhanced"))
    enhanced = cv2.imread(str(tmp_path / "enhanced" / "odd.png"))
    assert enhanced.shape == (70, 90, 3)  # any size: padded to a multiple of 8 and cropped back


def test_lpips_needs_every_weight(tmp_path):
    from ppuhd.metrics.lpips import LPIPS

    only_lins = str(tmp_path / "alex.npz")
    np.savez(only_lins, **{f"lin{i}.model.1.weight": np.ones((1, c, 1, 1), np.float32)
                           for i, c in enumerate([64, 192, 384, 256, 256])})
    with pytest.raises(ValueError, match="missing: features.0.weight"):
        LPIPS(only_lins)


def test_previews_are_input_output_target_columns_under_their_names():
    rng = np.random.default_rng(0)
    images, outputs, targets = (rng.random((3, 3, 24, 40)).astype(np.float32) for _ in range(3))
    collector = PreviewCollector(count=2)
    collector({"image": paddle.to_tensor(images), "target": paddle.to_tensor(targets)}, None, paddle.to_tensor(outputs))
    grid = collector.grid()
    header = column_header(3 * 40, PREVIEW_COLUMNS)
    np.testing.assert_array_equal(grid[: header.shape[0]], header)
    first_row = grid[header.shape[0]: header.shape[0] + 24]
    for column, batch in enumerate((images, outputs, targets)):
        np.testing.assert_array_equal(first_row[:, 40 * column: 40 * (column + 1)], quantize(batch[0].transpose(1, 2, 0)))
    assert grid.shape == (header.shape[0] + 2 * 24, 120, 3)  # two samples kept, as asked
    # each name is written inside its own column: white text on the dark strip, centred, not clipped
    for column in range(3):
        part = header[:, 40 * column: 40 * (column + 1)]
        lit = np.nonzero(part.max(axis=(0, 2)) > 128)[0]
        assert len(lit) > 10 and lit[0] > 0 and lit[-1] < 39
