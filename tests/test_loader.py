"""Bad files in every loader mode: named errors, prompt exits, honest skipping, no orphaned workers."""

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import paddle
import pytest
import yaml

from ppuhd import builder
from ppuhd.data.image_io import ImageReadError
from ppuhd.data.loader import BatchSizeError, DataLoader, LoaderWorkerError
from ppuhd.data.paired import PairedImageFolder
from ppuhd.data.sampler import EvalBatchSampler, TrainBatchSampler
from ppuhd.engine.evaluator import evaluate
from ppuhd.errors import UserError
from ppuhd.engine.reports import write_json, write_per_image_csv
from ppuhd.registry import DATASETS, METRICS, MODELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def user_errors():
    """Every error class of the package that the tools report as one line."""
    import ppuhd.deploy  # noqa: F401  (modules ``import ppuhd`` does not load)
    import ppuhd.engine.outputs  # noqa: F401

    classes, stack = set(), [UserError]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in classes:
                classes.add(sub)
                stack.append(sub)
    return sorted((c for c in classes if not c.__name__.startswith("_")), key=lambda c: c.__name__)


TINY_UHDFOUR = {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 16, "fuse_channels": 8}


def make_pairs(root, count=6, size=32, corrupt=(), mismatched=()):
    """``count`` 32x32 pairs in root/{input,gt}; some inputs corrupt or of another size."""
    rng = np.random.default_rng(0)
    os.makedirs(root / "input"), os.makedirs(root / "gt")
    for i in range(count):
        target = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        low = (target // 4) if i not in mismatched else np.zeros((size + 8, size, 3), np.uint8)
        cv2.imwrite(str(root / "gt" / f"{i}.png"), target)
        cv2.imwrite(str(root / "input" / f"{i}.png"), low)
        if i in corrupt:
            (root / "input" / f"{i}.png").write_bytes(b"not an image")
    return root


# ------------------------------------------------------------ in the library
class NeedsTwoArguments(Exception):
    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


class FailsOn(paddle.io.Dataset):
    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 4

    def describe(self, index):
        return f"sample {index}"

    def __getitem__(self, key):
        if key.index == 2:
            raise self.error
        return {"image": np.zeros((3, 4, 4), np.float32), "index": np.int64(key.index)}


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    "error, expected_type, expected_text",
    [
        (ImageReadError("/data/x.png", "not a decodable image"), ImageReadError, "cannot read image /data/x.png"),
        (KeyError("label"), KeyError, "label"),
        # A class that cannot be rebuilt from its message still arrives from a worker, named.
        (NeedsTwoArguments("crop", "too big"), RuntimeError, "crop: too big"),
    ],
)
def test_an_error_in_loading_arrives_as_itself_in_every_mode(workers, error, expected_type, expected_text):
    loader = DataLoader(FailsOn(error), EvalBatchSampler(4, 1), workers)
    with pytest.raises(expected_type if workers else type(error), match=expected_text) as info:
        list(loader)
    if workers:  # where it happened, for debugging
        assert "Traceback" in str(info.value.__cause__) and "in __getitem__" in str(info.value.__cause__)


class KillsItsProcess(FailsOn):
    def __getitem__(self, key):
        if key.index == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return super().__getitem__(key)


def test_a_worker_that_dies_ends_the_iteration_promptly_naming_it():
    start = time.monotonic()
    with pytest.raises(LoaderWorkerError, match=r"data loader worker 0 \(pid \d+\) exited unexpectedly with code -9"):
        list(DataLoader(KillsItsProcess(None), EvalBatchSampler(4, 1), 2))
    assert time.monotonic() - start < 20


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_of_different_sizes_in_one_batch_are_named(tmp_path, workers):
    make_pairs(tmp_path / "set", count=2, mismatched=[1])
    dataset = PairedImageFolder(str(tmp_path / "set" / "gt"), str(tmp_path / "set" / "gt"))
    dataset.pairs[1] = (str(tmp_path / "set" / "input" / "1.png"),) * 2  # a 40x32 pair beside a 32x32 one
    with pytest.raises(BatchSizeError, match=r"0.png.*32x32x3.*1.png.*40x32x3.*val_batch_size"):
        list(DataLoader(dataset, EvalBatchSampler(2, 2), workers))


def test_the_user_errors_are_all_found():
    assert len(user_errors()) >= 13 and ImageReadError in user_errors() and BatchSizeError in user_errors()


@pytest.mark.parametrize("error", user_errors(), ids=lambda c: c.__name__)
def test_every_user_error_survives_pickling_and_paddles_reraise(error):
    message = "DataLoader worker(0) caught it with message: cannot read /x.png"
    rebuilt = error(message)  # what Paddle's worker re-raise calls
    assert str(rebuilt) == message
    assert str(pickle.loads(pickle.dumps(rebuilt))) == message


def skipping_pairs(root):
    return builder.build({"type": "PairedImageFolder", "input_dir": str(root / "input"), "target_dir": str(root / "gt"),
                          "transforms": [{"type": "ToCHW"}], "on_error": "skip"}, DATASETS)


def tiny_evaluation(root, workers, batch_size):
    dataset = skipping_pairs(root)
    metric = builder.build({"type": "ImageQuality", "convention": "uhdfour", "measures": ["psnr", "ssim"]}, METRICS)
    model = paddle.nn.Identity()  # the low-light input as the output: the input baseline
    loader = DataLoader(dataset, EvalBatchSampler(len(dataset), batch_size), workers)
    return dataset, metric, evaluate(model, loader, [metric])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluation_leaves_unreadable_images_out_instead_of_scoring_another_twice(tmp_path, workers, batch_size):
    make_pairs(tmp_path / "bad", corrupt=[2])
    clean = make_pairs(tmp_path / "clean")
    os.remove(clean / "input" / "2.png"), os.remove(clean / "gt" / "2.png")
    _, _, expected = tiny_evaluation(clean, 0, 1)
    dataset, metric, result = tiny_evaluation(tmp_path / "bad", workers, batch_size)
    assert result.metrics == pytest.approx(expected.metrics, abs=1e-12)
    assert result.left_out == [dataset.describe(2)] and result.left_out_indices == [2]
    assert len(metric.per_image()) == 5

    assert result.scored == [0, 1, 3, 4, 5]
    write_per_image_csv(tmp_path / "per_image.csv", dataset, result.scored, metric.per_image(),
                        result.metrics, result.left_out_indices)
    rows = list(csv.reader(open(tmp_path / "per_image.csv")))
    assert rows[0] == ["image", "psnr", "ssim", "note"]
    assert rows[3] == ["2.png", "", "", "left out: unreadable"]
    assert rows[-1][0] == "mean" and float(rows[-1][1]) == pytest.approx(expected.metrics["psnr"], abs=1e-5)
    assert rows[-1][-1] == "5 images"


@pytest.mark.parametrize("workers", [0, 2])
def test_training_substitutes_unreadable_images_and_counts_them(tmp_path, workers):
    dataset = skipping_pairs(make_pairs(tmp_path / "bad", corrupt=[2, 3]))
    sampler = TrainBatchSampler(len(dataset), 2, shuffle=False)
    batches = list(DataLoader(dataset, sampler, workers))
    indices = [int(i) for b in batches for i in b["index"].numpy()]
    assert indices == [0, 1, 4, 4, 4, 5]  # 2 and 3 replaced by the next readable image
    assert sum(int(b["skipped"].sum()) for b in batches) == 3  # 2 -> 3 -> 4 is two skips, 3 -> 4 one


# ------------------------------------------------------------ through the tools
def write_run(tmp_path, workers, on_error="raise", **train):
    data = {"type": "PairedImageFolder", "transforms": [{"type": "ToCHW"}], "on_error": on_error}
    cfg = {
        "model": TINY_UHDFOUR,
        "train_dataset": {**data, "input_dir": str(tmp_path / "train" / "input"),
                          "target_dir": str(tmp_path / "train" / "gt")},
        "val_dataset": {**data, "input_dir": str(tmp_path / "val" / "input"),
                        "target_dir": str(tmp_path / "val" / "gt")},
        "loss": {"type": "SmoothL1Loss"},
        "metrics": [{"type": "ImageQuality", "convention": "uhdfour", "measures": ["psnr"]}],
        "optimizer": {"type": "Adam"},
        "lr_scheduler": {"type": "CosineWarmup", "base_lr": 1e-3},
        "dataloader": {"batch_size": 2, "val_batch_size": 1, "num_workers": workers},
        "train": {"iters": 4, "eval_interval": 2, "save_interval": 2, "log_interval": 1, **train},
        "runtime": {"device": "cpu", "output_dir": str(tmp_path / "run"), "visualdl": False},
    }
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def tiny_weights(tmp_path):
    model = builder.build(TINY_UHDFOUR, MODELS)
    path = str(tmp_path / "tiny.pdparams")
    paddle.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("tool, defect", [("train", "corrupt"), ("eval", "corrupt"), ("train", "mismatched")])
def test_a_bad_image_ends_the_run_at_once_naming_it(tmp_path, workers, tool, defect):
    make_pairs(tmp_path / "train", **{defect: [3]})
    make_pairs(tmp_path / "val", **{defect: [3]})
    args = ["--weights", tiny_weights(tmp_path)] if tool == "eval" else []
    start = time.monotonic()
    result = subprocess.run([sys.executable, f"tools/{tool}.py", "-c", write_run(tmp_path, workers), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and time.monotonic() - start < 120
    split = "train" if tool == "train" else "val"
    named = {"corrupt": "not a decodable image", "mismatched": "differs from its target"}[defect]
    assert f"error: cannot read image {tmp_path / split / 'input' / '3.png'}: " in result.stderr
    assert named in result.stderr and "on_error: skip" in result.stderr
    assert "Traceback" not in result.stderr and "Blocking queue" not in result.stderr


def test_eval_with_skip_lists_left_out_images_in_its_results(tmp_path):
    make_pairs(tmp_path / "train")
    val = make_pairs(tmp_path / "val", corrupt=[3])
    images = sorted(os.listdir(val / "input"))
    os.rename(val / "input" / "5.png", val / "input" / "9.png")  # 9.png has no target, 5.png no input
    out = tmp_path / "eval"
    result = subprocess.run([sys.executable, "tools/eval.py", "-c", write_run(tmp_path, 2, "skip"),
                             "--weights", tiny_weights(tmp_path), "--output-dir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 unpaired or unreadable file(s) left out of these metrics" in result.stdout
    unreadable = f"{val / 'input' / '3.png'} / {val / 'gt' / '3.png'}"
    expected = [f"{val / 'gt' / '5.png'} (no input)", f"{val / 'input' / '9.png'} (no target)", unreadable]
    assert json.loads((out / "metrics.json").read_text())["left_out"] == expected
    assert "left out of the metrics: " + "; ".join(expected) in result.stdout
    rows = list(csv.reader(open(out / "per_image.csv")))
    assert [row[0] for row in rows[1:-1]] == [*images[:5], "5.png", "9.png"]
    assert rows[4] == ["3.png", "", "left out: unreadable"]
    assert rows[-3:-1] == [["5.png", "", "left out: no input"], ["9.png", "", "left out: no target"]]
    assert rows[-1][0] == "mean" and rows[-1][-1] == "4 images"


def test_training_with_workers_ends_with_its_loaders_shut_down_and_no_loader_warning(tmp_path):
    """'DataLoader 1 workers exit unexpectedly' (the words of paddle.io.DataLoader's reader thread when
    it finds its workers gone) was reported after runs: no run says it, and no loader is left running."""
    make_pairs(tmp_path / "train")
    make_pairs(tmp_path / "val")
    script = ("import multiprocessing, sys; sys.path.insert(0, 'tools'); import _bootstrap; "
              "from ppuhd.commands import train; train.main(sys.argv[1:]); "
              "print('loader processes left:', len(multiprocessing.active_children()))")
    # 6 pairs in batches of 2: iteration 3 ends a pass, iteration 4 starts one the run leaves unfinished;
    # evaluations (loaders of their own) at iterations 2 and 4
    result = subprocess.run([sys.executable, "-c", script, "-c", write_run(tmp_path, 2, iters=4)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Training finished." in result.stdout and "loader processes left: 0" in result.stdout
    output = result.stdout + result.stderr
    assert "exit unexpectedly" not in output and "WARNING" not in output, output


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_killing_training_leaves_no_loader_worker_or_shared_memory(tmp_path):
    make_pairs(tmp_path / "train")
    make_pairs(tmp_path / "val")
    run = subprocess.Popen([sys.executable, "tools/train.py", "-c", write_run(tmp_path, 2, iters=100000)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in run.stdout:  # wait until batches flow
            if "step 2/" in line:
                break
        workers = [int(p) for p in open(f"/proc/{run.pid}/task/{run.pid}/children").read().split()]
        assert len(workers) == 2 and all(alive(w) for w in workers)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(w) for w in workers)
        # Paddle's loader names its segments paddle_<pid>_...; none may be left by this run
        left = [n for n in os.listdir("/dev/shm") if any(n.startswith(f"paddle_{p}_") for p in [run.pid, *workers])]
        assert left == []
    finally:
        run.kill()


def test_an_image_scored_nan_is_named_and_the_results_stay_valid_json(tmp_path):
    root = make_pairs(tmp_path / "set", count=3)
    os.remove(root / "input" / "1.png")
    broken = np.full((32, 32, 3), 0.5, np.float32)
    broken[5, 5, 1] = np.nan  # a float TIFF holding NaN, read as it is
    cv2.imwrite(str(root / "input" / "1.tif"), broken)
    dataset, _, result = tiny_evaluation(root, 0, 1)
    assert np.isnan(result.metrics["psnr"]) and result.non_finite == [dataset.describe(1)]
    write_json(tmp_path / "metrics.json", {"metrics": result.metrics})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"metrics": {"psnr": None, "ssim": None}}
