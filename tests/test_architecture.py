"""The architecture's promises: the model contract, the task layer, and no hidden process-wide changes."""

import json
import os
import subprocess
import sys
import textwrap

import paddle
import pytest
import yaml

from ppuhd import build_model
from ppuhd.config import load_config
from ppuhd.contract import ModelInfo, model_info, select_output
from ppuhd.engine import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
            "num_heads": 2, "num_classes": 6}


# ------------------------------------------------------------------ the model contract
def test_every_named_variant_declares_its_contract():
    from ppuhd.registry import MODELS

    shallow = {"depth": 1}  # the contract does not depend on the depth; building is faster
    infos = {name: model_info(MODELS.get(name)(**arguments)) for name, arguments in [
        ("vit_tiny_patch16_384", shallow), ("deit_small_distilled_patch16_224", shallow), ("regnety_002", {}),
        ("uhdfour_uhd", {}), ("uhdfour_lol", {}), ("llformer", {"num_blocks": [1, 1, 1, 1]})]}
    for name, info in infos.items():
        assert info.task in ("classification", "enhancement") and info.eval_transforms, name
    assert infos["vit_tiny_patch16_384"].input_size == (384, 384)
    assert infos["vit_tiny_patch16_384"].eval_transforms[0] == {"type": "ResizeShort", "size": 384, "crop_ratio": 1.0,
                                                                "interpolation": "bicubic", "backend": "pil"}
    assert infos["deit_small_distilled_patch16_224"].eval_transforms[0]["type"] == "ResizeShort"
    assert infos["deit_small_distilled_patch16_224"].num_classes == 1000
    assert [infos[n].input_multiple for n in ("uhdfour_uhd", "uhdfour_lol", "llformer")] == [8, 2, 16]


def test_a_model_without_a_contract_is_named():
    with pytest.raises(TypeError, match="Linear declares no ModelInfo"):
        model_info(paddle.nn.Linear(2, 2))
    assert select_output((1, 2), 1) == 2 and select_output(3) == 3
    with pytest.raises(ValueError, match="task must be one of"):
        ModelInfo(task="segmentation")


def shipped_configs(folder):
    for name in sorted(os.listdir(os.path.join(REPO, "configs", folder))):
        if name.endswith(".yml") and not name.startswith("_"):
            yield os.path.join(REPO, "configs", folder, name)


@pytest.mark.parametrize("folder", ["vit", "deit", "regnet"])
def test_shipped_classifier_configs_evaluate_with_their_models_official_preprocessing(folder):
    checked = 0
    for path in shipped_configs(folder):
        # One block is enough to read the contract (it depends on the variant and its input size);
        # RegNet's is the same for every size, read from the smallest.
        overrides = ["model.type=regnetx_002"] if folder == "regnet" else ["model.depth=1"]
        cfg = load_config(path, overrides)
        expected = [dict(t) for t in model_info(cfg.build_model()).eval_transforms]
        assert cfg["val_dataset"]["transforms"] == expected, path
        checked += 1
    assert checked >= 4


# ------------------------------------------------------------------ the task layer
def enhancement_config(tmp_path):
    data = {"type": "DemoLowLight", "root": str(tmp_path / "data"), "image_size": 32, "train_images": 4, "val_images": 2}
    return load_config({
        "model": {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 16, "fuse_channels": 8},
        "train_dataset": {**data, "split": "train", "transforms": [{"type": "ToCHW"}]},
        "val_dataset": {**data, "split": "val", "transforms": [{"type": "ToCHW"}]},
        "loss": {"type": "CombinedLoss", "terms": [
            {"loss": {"type": "SmoothL1Loss"}, "weight": 5.0, "output": 0},
            {"loss": {"type": "SmoothL1Loss"}, "weight": 0.5, "output": 1},
            {"loss": {"type": "SSIMLoss"}, "weight": 0.002, "output": 0, "name": "ssim"}]},
        "metrics": [{"type": "ImageQuality", "measures": ["psnr"]}],
        "optimizer": {"type": "Adam"},
        "lr_scheduler": {"type": "CosineWarmup", "base_lr": 1e-3},
        "dataloader": {"batch_size": 2, "num_workers": 0},
        "train": {"iters": 2, "log_interval": 1, "eval_interval": 2, "save_interval": 2},
        "runtime": {"device": "cpu", "output_dir": str(tmp_path / "run"), "visualdl": False},
    })


def test_every_loss_term_is_logged_by_name(tmp_path, caplog):
    cfg = enhancement_config(tmp_path)
    Trainer(cfg).run()
    log = open(os.path.join(cfg.runtime.output_dir, "train.log")).read()
    for text in (caplog.text, log):
        line = next(line for line in text.splitlines() if "step 1/2 loss" in line)
        assert "(SmoothL1Loss_out0 " in line and ", SmoothL1Loss_out1 " in line and ", ssim " in line, line


def test_an_enhancer_run_writes_labelled_previews_and_its_summary_names_them(tmp_path):
    import cv2
    import numpy as np
    from ppuhd.engine.reports import PREVIEW_COLUMNS, column_header

    summary = Trainer(enhancement_config(tmp_path)).run()
    assert summary["previews"] == str(tmp_path / "run" / "previews")
    grid = cv2.imread(os.path.join(summary["previews"], "step_000002.png"))[..., ::-1]
    header = column_header(3 * 32, PREVIEW_COLUMNS)
    # the two 32x32 validation scenes as input | output | target rows, under the column names
    assert grid.shape == (header.shape[0] + 2 * 32, 3 * 32, 3)
    np.testing.assert_array_equal(grid[: header.shape[0]], header)
    assert grid[header.shape[0]:].std() > 0  # the images, not more header


def test_the_terms_add_up_to_the_loss_the_official_code_computes(tmp_path):
    cfg = enhancement_config(tmp_path)
    model, criterion = cfg.build_model(), cfg.build_loss()
    batch = {"image": paddle.rand([2, 3, 32, 32]), "target": paddle.rand([2, 3, 32, 32])}
    outputs = model(batch["image"])
    terms = criterion.terms(outputs, batch)
    assert list(terms) == ["SmoothL1Loss_out0", "SmoothL1Loss_out1", "ssim"]
    assert float(sum(terms.values())) == pytest.approx(float(criterion(outputs, batch["target"])), rel=1e-6)


def test_the_benchmark_times_a_distilled_deit_training_step(tmp_path):
    teacher = {"type": "models.ConvNet", "widths": [8, 8], "strides": [2, 2], "num_classes": 6}
    weights = str(tmp_path / "teacher.pdparams")
    paddle.save(build_model(teacher).state_dict(), weights)
    student = {"type": "DistilledVisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
               "num_heads": 2, "num_classes": 6}
    cfg = tmp_path / "deit.yml"
    cfg.write_text(yaml.safe_dump({
        "model": student, "runtime": {"device": "cpu"},
        "loss": {"type": "DistillationLoss", "base": {"type": "SoftTargetCrossEntropy"}, "teacher": teacher,
                 "teacher_weights": weights, "distillation_type": "hard"},
        "batch_transform": {"type": "Mixup", "num_classes": 6, "mixup_alpha": 0.8, "cutmix_alpha": 1.0},
    }))
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "-c", str(cfg), "--mode", "train", "--batch-sizes",
                             "4", "--runs", "1", "--warmup", "0", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (case,) = json.loads(out.read_text())["cases"]
    assert case["loss"] == "DistillationLoss" and case["median_s"] > 0


# ------------------------------------------------------------------ no hidden process-wide changes
UNTOUCHED = textwrap.dedent(
    """
    import logging, os, sys
    import numpy as np
    import paddle
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    flags = paddle.get_flags(["FLAGS_use_stride_kernel"])

    def resident_growth_mib():
        def resident():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        before = resident()
        block = np.ones(256 * 2**20, dtype=np.uint8)
        del block
        return (resident() - before) / 2**20

    import ppuhd
    from ppuhd.config import load_config
    from ppuhd.deploy import Predictor, export_model
    from ppuhd.engine import Trainer
    tmp = sys.argv[1]
    vit = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
           "num_heads": 2, "num_classes": 6}
    model = ppuhd.build_model(vit)
    paddle.save(model.state_dict(), os.path.join(tmp, "w.pdparams"))
    export_model({"model": vit}, os.path.join(tmp, "w.pdparams"), os.path.join(tmp, "export"))
    Predictor(os.path.join(tmp, "export")).run(np.zeros((1, 3, 16, 16), np.float32))
    data = {"type": "DemoShapes", "root": os.path.join(tmp, "data"), "image_size": 16, "train_per_class": 2,
            "val_per_class": 1, "transforms": [{"type": "Normalize"}, {"type": "ToCHW"}]}
    Trainer(load_config({
        "model": vit, "train_dataset": {**data, "split": "train"}, "val_dataset": {**data, "split": "val"},
        "loss": {"type": "CrossEntropyLoss"}, "metrics": [{"type": "TopKAccuracy", "topk": [1]}],
        "optimizer": {"type": "AdamW"}, "lr_scheduler": {"type": "CosineWarmup", "base_lr": 1e-3},
        "dataloader": {"batch_size": 4, "num_workers": 0}, "train": {"iters": 2},
        "runtime": {"device": "cpu", "output_dir": os.path.join(tmp, "run"), "visualdl": False}})).run()
    assert root.handlers == handlers and root.level == level, (root.handlers, handlers, root.level, level)
    assert logging.getLogger("ppuhd").handlers == [], logging.getLogger("ppuhd").handlers
    assert paddle.get_flags(["FLAGS_use_stride_kernel"]) == flags
    growth = resident_growth_mib()
    assert growth < 64, f"a freed 256 MiB block stayed in the process ({growth:.0f} MiB): the allocator was changed"
    print("untouched")
    """
)


def test_building_and_running_leaves_logging_flags_and_allocator_as_they_were(tmp_path):
    result = subprocess.run([sys.executable, "-c", UNTOUCHED, str(tmp_path)], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "untouched" in result.stdout, result.stderr[-3000:]


def test_configure_applies_the_tools_settings_when_asked():
    code = ("import logging, paddle, ppuhd; ppuhd.runtime.configure();"
            "assert not paddle.get_flags(['FLAGS_use_stride_kernel'])['FLAGS_use_stride_kernel'];"
            "assert logging.getLogger().level == logging.INFO and logging.getLogger().handlers; print('configured')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "configured" in result.stdout, result.stderr[-3000:]
