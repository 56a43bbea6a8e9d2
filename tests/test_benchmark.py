"""The benchmark tool: what it counts and what it writes (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from ppuhd import build_model
from ppuhd.deploy.benchmark import count_macs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_VIT = {"type": "VisionTransformer", "img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2,
             "num_heads": 3, "num_classes": 10}


def test_macs_count_every_matmul_and_convolution_of_a_vit():
    tokens, dim, hidden, heads = 17, 48, 192, 3
    patch = 16 * dim * 3 * 8 * 8
    block = (tokens * dim * 3 * dim  # qkv
             + 2 * heads * tokens * tokens * (dim // heads)  # q k^T and attention x v
             + tokens * dim * dim  # projection
             + 2 * tokens * dim * hidden)  # MLP
    assert count_macs(build_model(SMALL_VIT), [1, 3, 32, 32]) == patch + 2 * block + dim * 10


@pytest.mark.slow
def test_benchmark_tool_measures_eager_and_exported_models(tmp_path):
    cfg = tmp_path / "small.yml"
    cfg.write_text(yaml.safe_dump({"model": SMALL_VIT, "runtime": {"device": "cpu"}}))
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "-c", str(cfg), "--batch-sizes", "1,4",
                             "--runs", "2", "--warmup", "1", "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [(c["mode"], c["batch"]) for c in report["cases"]] == [("dygraph", 1), ("predictor", 1), ("dygraph", 4),
                                                                   ("predictor", 4)]
    assert all(c["median_s"] > 0 and c["peak_memory_gib"] > 0 for c in report["cases"])
    assert report["params"] == sum(p.size for p in build_model(SMALL_VIT).parameters())
    assert "img/s" in result.stdout and "GMACs" in result.stdout
