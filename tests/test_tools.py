"""The command-line tools end to end, as a researcher runs them."""

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMM_VIT = os.path.join(REPO, "tests", "fixtures", "vit", "vit_tiny_timm.pth")


def run_tool(*args, expect_ok=True, timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if expect_ok and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def write_config(tmp_path, **train):
    data = {"type": "DemoShapes", "root": str(tmp_path / "data"), "image_size": 16, "train_per_class": 4,
            "val_per_class": 2}
    cfg = {
        "model": {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2,
                  "num_heads": 2, "num_classes": 6},
        "train_dataset": {**data, "split": "train", "transforms": [
            {"type": "RandomResizedCrop", "size": 16, "scale": [0.5, 1.0]}, {"type": "Normalize"},
            {"type": "ToCHW"}]},
        "val_dataset": {**data, "split": "val", "transforms": [{"type": "Normalize"}, {"type": "ToCHW"}]},
        "loss": {"type": "CrossEntropyLoss"},
        "metrics": [{"type": "TopKAccuracy", "topk": [1, 2]}],
        "optimizer": {"type": "AdamW"},
        "lr_scheduler": {"type": "CosineWarmup", "base_lr": 1e-3},
        "dataloader": {"batch_size": 4, "num_workers": 0},
        "train": {"iters": 3, "eval_interval": 3, "save_interval": 3, "log_interval": 1, **train},
        "runtime": {"device": "cpu", "output_dir": str(tmp_path / "run"), "visualdl": True},
        "export": {"input_size": [16, 16]},
    }
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_train_eval_export_infer(tmp_path):
    cfg = write_config(tmp_path)
    out = run_tool("tools/train.py", "-c", cfg).stdout
    assert "Training finished." in out and "best checkpoint:" in out and "merged config:" in out
    run_dir = tmp_path / "run"
    assert (run_dir / "config.yml").is_file() and (run_dir / "train.log").is_file()
    assert any(name.startswith("vdlrecords") for name in os.listdir(run_dir / "vdl"))
    trained = json.loads((run_dir / "metrics.json").read_text())["history"][-1]

    out = run_tool("tools/eval.py", "-c", cfg, "--weights", str(run_dir / "checkpoints" / "best"),
                   "--output-dir", str(tmp_path / "eval")).stdout
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert evaluated["top1"] == pytest.approx(trained["top1"]) and "top1:" in out

    export_dir = tmp_path / "export"
    out = run_tool("tools/export.py", "-c", cfg, "--weights", str(run_dir / "checkpoints" / "best"),
                   "--output", str(export_dir)).stdout
    assert {"model.json", "model.pdiparams", "deploy.yml"} <= set(os.listdir(export_dir))
    difference = float(out.split("on a random batch, paddle:")[1].split()[0])
    assert difference <= 1e-5

    images = tmp_path / "data" / "demo_shapes_v1_16px_4_2" / "val" / "star"
    out = run_tool("tools/infer.py", "--model-dir", str(export_dir), "--input", str(images), "--topk", "2").stdout
    lines = [line for line in out.splitlines() if line.startswith(str(images))]
    assert len(lines) == 2 and all(any(name in line for name in ("star", "ring", "cross")) for line in lines)


def test_the_summary_says_which_weights_scored_best_and_how_to_use_them(tmp_path):
    import shlex

    cfg = write_config(tmp_path, iters=6, eval_interval=6, ema={"decay": 0.5})
    out = run_tool("tools/train.py", "-c", cfg).stdout
    run_dir = tmp_path / "run"
    best = json.loads((run_dir / "metrics.json").read_text())["history"][-1]
    use_ema = best["ema_top1"] > best["top1"]
    which = "the EMA weights (--ema)" if use_ema else "the raw weights (not the EMA)"
    assert f"best top1: {best['top1']:.4f} (step 6); ema_top1 {best['ema_top1']:.4f} there: {which} scored best" in out
    assert "previews:" not in out  # a classifier writes none
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
    weights = ["--weights", str(run_dir / "checkpoints" / "best")] + (["--ema"] if use_ema else [])
    assert shlex.split(lines["evaluate the best"]) == ["python", "tools/eval.py", "-c", str(run_dir / "config.yml"),
                                                       *weights]
    assert shlex.split(lines["export the best"]) == ["python", "tools/export.py", "-c", str(run_dir / "config.yml"),
                                                     *weights, "--output", str(run_dir / "export")]
    evaluated = run_tool(*shlex.split(lines["evaluate the best"])[1:]).stdout  # the command as printed
    assert f"top1: {max(best['top1'], best['ema_top1']):.4f}" in evaluated


def test_exported_model_matches_dygraph_at_free_sizes(tmp_path):
    from ppuhd import build_model
    from ppuhd.deploy import Predictor, export_model

    cfg = {"model": {"type": "VisionTransformer", "img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2,
                     "num_heads": 3, "num_classes": 10}}
    deploy, model = export_model(cfg, TIMM_VIT, str(tmp_path), dynamic_size=True)
    assert deploy["dynamic_size"]
    predictor = Predictor(str(tmp_path))
    reference = build_model(cfg, weights=TIMM_VIT)
    for shape in [(2, 3, 32, 32), (1, 3, 48, 40), (3, 3, 16, 64)]:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        (got,) = predictor.run(x)
        assert np.abs(got - reference(paddle.to_tensor(x)).numpy()).max() <= 1e-5


def test_config_errors_reach_the_user_as_one_clear_line(tmp_path):
    cfg = write_config(tmp_path)
    result = run_tool("tools/train.py", "-c", cfg, "-o", "train.itres=5", expect_ok=False)
    assert result.returncode != 0
    assert "config error:" in result.stderr and "Did you mean 'iters'" in result.stderr
    assert "Traceback" not in result.stderr


def test_convert_weights_cli(tmp_path):
    cfg = tmp_path / "small.yml"
    cfg.write_text(yaml.safe_dump({"model": {"type": "VisionTransformer", "img_size": 48, "patch_size": 8,
                                             "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 10}}))
    dst = tmp_path / "vit.pdparams"
    out = run_tool("tools/convert_weights.py", "-c", str(cfg), "--src", TIMM_VIT, "--dst", str(dst)).stdout
    assert "converted" in out and dst.is_file()
    assert paddle.load(str(dst))["pos_embed"].shape == [1, 37, 48]  # resized to the 48x48 model
    bad = run_tool("tools/convert_weights.py", "-c", str(cfg), "--src", TIMM_VIT, "--dst", str(dst) + ".2",
                   "-o", "model.depth=1", expect_ok=False)
    assert bad.returncode != 0 and "unexpected in the source: blocks.1.norm1.weight" in bad.stderr
    again = run_tool("tools/convert_weights.py", "-c", str(cfg), "--src", TIMM_VIT, "--dst", str(dst), expect_ok=False)
    assert again.returncode != 0 and f"refusing to replace the output file ({dst}); pass --overwrite" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("to_static", [False, True])
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, to_static):
    cfg = write_config(tmp_path)
    mode = ["-o", f"train.to_static={to_static}"]
    run_tool("tools/train.py", "-c", cfg, "-o", "dataloader.batch_size=8", "-o",
             f"runtime.output_dir={tmp_path / 'single'}", *mode)
    run_tool("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "logs"),
             "tools/train.py", "-c", cfg, "-o", f"runtime.output_dir={tmp_path / 'double'}", *mode)
    assert (tmp_path / "logs" / "workerlog.1").is_file()  # a second process really ran
    single = paddle.load(str(tmp_path / "single" / "checkpoints" / "iter_000003" / "model.pdparams"))
    double = paddle.load(str(tmp_path / "double" / "checkpoints" / "iter_000003" / "model.pdparams"))
    assert max(float(np.abs(single[k].numpy() - double[k].numpy()).max()) for k in single) <= 1e-5
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["history"][-1]
               for run in ("single", "double")]
    assert metrics[0] == pytest.approx(metrics[1])  # validation split across two processes, sums gathered


@pytest.mark.parametrize(
    "tool, extra, expected",
    [
        ("tools/train.py", ["-o", "train.best_metric=top_1"], "train.best_metric 'top_1' is not reported. Did you mean 'top1'"),
        ("tools/eval.py", ["--weights", "/nonexistent/best"], "weights file not found: /nonexistent/best"),
    ],
)
def test_bad_input_stops_with_one_line_naming_it(tmp_path, tool, extra, expected):
    result = run_tool(tool, "-c", write_config(tmp_path), *extra, expect_ok=False)
    assert result.returncode != 0 and expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("tool", ["train", "eval"])
def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, tool):
    (tmp_path / "taken").write_text("a file where the folder should be")
    target = tmp_path / "taken" / "out"
    args = ["-o", f"runtime.output_dir={target}"] if tool == "train" else [
        "--weights", "/nonexistent", "--output-dir", str(target)]
    result = run_tool(f"tools/{tool}.py", "-c", write_config(tmp_path), *args, expect_ok=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    what = "training output" if tool == "train" else "output"
    assert f"error: cannot create the {what} folder {target}" in result.stderr


def test_a_missing_dataset_folder_is_named_before_training(tmp_path):
    cfg = tmp_path / "missing.yml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(open(write_config(tmp_path))),
                                   "train_dataset": {"type": "ImageFolder", "root": "/nonexistent/imagenet"}}))
    result = run_tool("tools/train.py", "-c", str(cfg), expect_ok=False)
    assert "config error: train_dataset: building datasets 'ImageFolder' failed" in result.stderr
    assert "dataset folder not found: /nonexistent/imagenet" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "tool, arguments",
    [
        ("tools/eval.py", ["--weights", "{evil}"]),
        ("tools/export.py", ["--weights", "{evil}", "--output", "{tmp}/export"]),
        ("tools/convert_weights.py", ["--src", "{evil}", "--dst", "{tmp}/converted.pdparams"]),
        ("tools/train.py", ["-o", "train.pretrained={evil}"]),
        ("tools/train.py", ["--resume", "{checkpoint}"]),
    ],
)
def test_a_hostile_paddle_file_runs_nothing_in_any_tool(tmp_path, tool, arguments):
    from test_weights_readers import hostile_paddle_file

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for name in ("model.pdparams", "train_state.pdstates"):
        hostile_paddle_file(checkpoint / name, marker)
    evil = hostile_paddle_file(tmp_path / "evil.pdparams", marker)
    places = {"evil": str(evil), "tmp": str(tmp_path), "checkpoint": str(checkpoint)}
    result = run_tool(tool, "-c", write_config(tmp_path), *[a.format(**places) for a in arguments],
                      expect_ok=False)
    assert result.returncode != 0 and "refusing to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_compare_puts_two_trainings_side_by_side(tmp_path):
    runs = []
    for seed in (0, 1):
        run_tool("tools/train.py", "-c", write_config(tmp_path, seed=seed, iters=4, eval_interval=2, save_interval=2),
                 "-o", f"runtime.output_dir={tmp_path / f'seed{seed}'}")
        runs.append(json.loads((tmp_path / f"seed{seed}" / "metrics.json").read_text()))
    out = run_tool("tools/compare.py", str(tmp_path / "seed0"), str(tmp_path / "seed1")).stdout.splitlines()
    assert out[0].split() == ["run", "model", "last", "top1", "last", "top2", "best", "(step)", "best", "against",
                              str(tmp_path / "seed0")]
    for line, metrics in zip(out[1:], runs):
        last, best = metrics["history"][-1], metrics["best"]
        assert line.split()[1:7] == ["VisionTransformer", f"{last['top1']:.2f}", f"{last['top2']:.2f}", "top1",
                                     f"{best['value']:.2f}", f"({best['step']})"]
    assert out[2].split()[-1] == f"{runs[1]['best']['value'] - runs[0]['best']['value']:+.2f}"

    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "metrics.json").write_text('{"best": ')
    for folder, expected in [(tmp_path, f"{tmp_path} has no metrics.json: give a training's output folder"),
                             (tmp_path / "damaged", "metrics.json is not a training's metrics file")]:
        result = run_tool("tools/compare.py", str(tmp_path / "seed0"), str(folder), expect_ok=False)
        assert result.returncode != 0 and expected in result.stderr and "Traceback" not in result.stderr
