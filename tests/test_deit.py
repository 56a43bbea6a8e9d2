"""DeiT: the distilled model and the distillation loss against the official code."""

import math
import os

import numpy as np
import paddle
import pytest

from ppuhd import build_model
from ppuhd.engine import Trainer
from ppuhd.losses.classification import CrossEntropyLoss
from ppuhd.losses.distillation import DistillationLoss
from ppuhd.registry import MODELS
from tests.alignment.losses import LinearTeacher

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "deit")
SMALL = dict(type="DistilledVisionTransformer", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
             num_classes=10)


@pytest.fixture(scope="module")
def reference():
    return np.load(os.path.join(FIXTURES, "deit_reference.npz"))


@pytest.fixture
def model():
    return build_model(SMALL, weights=os.path.join(FIXTURES, "deit_distilled_small.pth"))


def test_evaluation_returns_the_average_and_either_head_on_request(model, reference):
    x = paddle.to_tensor(reference["x"])
    assert np.abs(model(x).numpy() - reference["eval_avg"]).max() < 1e-5
    model.eval_head = "all"
    average, cls_logits, dist_logits = model(x)
    np.testing.assert_allclose(cls_logits.numpy(), reference["train_cls"], atol=1e-5)
    np.testing.assert_allclose(dist_logits.numpy(), reference["train_dist"], atol=1e-5)
    np.testing.assert_allclose(average.numpy(), reference["eval_avg"], atol=1e-5)


def test_position_embedding_resizing_keeps_both_tokens_apart(reference):
    bigger = build_model({**SMALL, "img_size": 48}, weights=os.path.join(FIXTURES, "deit_distilled_small.pth"))
    source = build_model(SMALL, weights=os.path.join(FIXTURES, "deit_distilled_small.pth"))
    assert bigger.pos_embed.shape == [1, 2 + 36, 48]
    np.testing.assert_array_equal(bigger.pos_embed.numpy()[:, :2], source.pos_embed.numpy()[:, :2])
    assert sorted(bigger.no_weight_decay_names()) == ["cls_token", "dist_token", "pos_embed"]


def test_named_variants_are_registered_with_deit_sizes():
    expected = {"deit_tiny_patch16_224": 5_717_416, "deit_small_patch16_224": 22_050_664,
                "deit_base_patch16_224": 86_567_656, "deit_base_patch16_384": 86_859_496}
    for name, plain_count in expected.items():
        distilled_name = name.replace("_patch16", "_distilled_patch16")
        with paddle.LazyGuard():
            plain, distilled = MODELS.get(name)(), MODELS.get(distilled_name)()
        width = plain.embed_dim
        assert sum(math.prod(p.shape) for p in plain.parameters()) == plain_count
        # one more token, one more pos_embed row and a second head (width x 1000 + 1000)
        extra = 2 * width + width * 1000 + 1000
        assert sum(math.prod(p.shape) for p in distilled.parameters()) == plain_count + extra


def test_the_teacher_is_frozen_in_eval_mode_and_gets_no_gradient(reference, tmp_path):
    teacher = LinearTeacher(reference["teacher_weight"], reference["teacher_bias"])
    weights = str(tmp_path / "teacher.pdparams")
    paddle.save(teacher.state_dict(), weights)
    loss = DistillationLoss(CrossEntropyLoss(), teacher, weights, "soft")
    loss.train()
    assert not loss.teacher.training
    student = paddle.to_tensor(reference["loss_dist"], stop_gradient=False)
    value = loss((paddle.to_tensor(reference["loss_cls"]), student), paddle.to_tensor(reference["labels"]),
                 paddle.to_tensor(reference["loss_inputs"]))
    value.backward()
    assert student.grad is not None and teacher.fc.weight.grad is None


def test_distillation_without_a_teacher_is_refused():
    with pytest.raises(ValueError, match="hard distillation needs a teacher and teacher_weights"):
        DistillationLoss(CrossEntropyLoss(), None, None, "hard")


@pytest.mark.slow
def test_teacher_is_not_in_the_students_checkpoints(tmp_path):
    from test_engine import tiny_config

    teacher_run = Trainer(tiny_config(tmp_path / "teacher", iters=2, ema=None))
    teacher_run.run()
    teacher_weights = os.path.join(teacher_run.checkpoints.latest(), "model.pdparams")
    cfg = tiny_config(tmp_path / "student", iters=2, ema=None)
    teacher_cfg = dict(cfg["model"])
    cfg["model"] = {**cfg["model"], "type": "DistilledVisionTransformer"}
    cfg["loss"] = {"type": "DistillationLoss", "base": {"type": "CrossEntropyLoss"}, "teacher": teacher_cfg,
                   "teacher_weights": teacher_weights, "distillation_type": "hard"}
    student = Trainer(cfg)
    teacher_before = {k: v.numpy().copy() for k, v in student.setup.criterion.teacher.state_dict().items()}
    student.run()
    saved = paddle.load(os.path.join(student.checkpoints.latest(), "model.pdparams"))
    assert "dist_token" in saved and not any("teacher" in key for key in saved)
    assert set(saved) == set(student.setup.model.state_dict())
    for key, value in student.setup.criterion.teacher.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), teacher_before[key])


def test_demo_students_with_and_without_distillation_share_one_budget():
    from ppuhd.config import load_config

    demo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo")
    distilled, plain = (load_config(os.path.join(demo, name)) for name in ("deit_demo.yml", "deit_plain_demo.yml"))
    teacher = load_config(os.path.join(demo, "deit_teacher_demo.yml"))
    differing = {"model", "loss", "metrics", "runtime"}
    assert {k: v for k, v in distilled.items() if k not in differing} == \
        {k: v for k, v in plain.items() if k not in differing}
    assert {k: v for k, v in distilled["model"].items() if k not in ("type", "eval_head")} == \
        {k: v for k, v in plain["model"].items() if k != "type"}
    assert (distilled["model"]["type"], plain["model"]["type"]) == ("DistilledVisionTransformer", "VisionTransformer")
    assert distilled["loss"]["base"] == plain["loss"]
    # the teacher trains on the students' data and crops, so its labels describe the crops they see
    assert teacher["train_dataset"] == plain["train_dataset"]
    assert teacher["runtime"]["output_dir"] in distilled["loss"]["teacher_weights"]


@pytest.mark.slow
def test_demo_trains_a_teacher_then_distils_a_student_and_trains_it_plain(tmp_path):
    import json
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    short = ["-o", "train.epochs=null", "-o", "train.iters=20", "-o", "train.eval_interval=20"]
    teacher_dir, student_dir, plain_dir = tmp_path / "teacher", tmp_path / "student", tmp_path / "plain"
    printed = {}
    for config, out, extra in [
        ("configs/demo/deit_teacher_demo.yml", teacher_dir, []),
        ("configs/demo/deit_demo.yml", student_dir,
         ["-o", f"loss.teacher_weights={teacher_dir / 'checkpoints' / 'best' / 'model.pdparams'}"]),
        ("configs/demo/deit_plain_demo.yml", plain_dir, []),
    ]:
        result = subprocess.run([sys.executable, "tools/train.py", "-c", config, *short, *extra,
                                 "-o", f"runtime.output_dir={out}"], cwd=repo, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr
        printed[out] = result.stdout
    student_metrics, plain_metrics = (json.loads((d / "metrics.json").read_text()) for d in (student_dir, plain_dir))
    final, plain_final = student_metrics["history"][-1], plain_metrics["history"][-1]
    assert {"top1", "cls_top1", "dist_top1", "ema_top1"} <= set(final)
    assert {"top1", "ema_top1"} <= set(plain_final) and "dist_top1" not in plain_final
    assert "cls_top1" in printed[student_dir] and "dist_top1" in printed[student_dir]
    assert "final validation metrics" in printed[plain_dir]
    # the README's last step: the two students side by side, the plain one's gap to the distilled one
    table = subprocess.run([sys.executable, "tools/compare.py", str(student_dir), str(plain_dir)], cwd=repo,
                           capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()
    assert table[1].split()[:3] == [str(student_dir), "DistilledVisionTransformer", f"{final['top1']:.2f}"]
    assert table[2].split()[:3] == [str(plain_dir), "VisionTransformer", f"{plain_final['top1']:.2f}"]
    gap = plain_metrics["best"]["value"] - student_metrics["best"]["value"]
    assert table[2].split()[-1] == f"{gap:+.2f}"
