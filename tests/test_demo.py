"""The README's first command: the demo trains a ViT well above chance on a CPU."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_vit_demo_learns_the_shapes(tmp_path):
    # Half the README's 12 epochs keeps CI short; 6 epochs reach about 47% top-1 (chance: 16.7%).
    result = subprocess.run(
        [sys.executable, "tools/train.py", "-c", "configs/demo/vit_demo.yml", "-o", "train.epochs=6",
         "-o", "train.eval_interval=6", "-o", f"runtime.output_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "final validation metrics" in result.stdout and "best checkpoint:" in result.stdout
    final = json.loads((tmp_path / "metrics.json").read_text())["history"][-1]
    assert final["top1"] > 2 * 100 / 6
