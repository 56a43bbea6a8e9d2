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


def run_benchmark(tmp_path, config, *args):
    cfg = tmp_path / "bench.yml"
    cfg.write_text(yaml.safe_dump({**config, "runtime": {"device": "cpu"}}))
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "tools/benchmark.py", "-c", str(cfg), "--runs", "1", "--warmup", "0",
                             "--json", str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_benchmark_tool_measures_eager_and_exported_models(tmp_path):
    report, stdout = run_benchmark(tmp_path, {"model": SMALL_VIT}, "--batch-sizes", "1,4", "--runs", "2",
                                   "--warmup", "1", "--rounds", "2")
    assert [(c["mode"], c["batch"]) for c in report["cases"]] == [("dygraph", 1), ("predictor", 1), ("dygraph", 4),
                                                                   ("predictor", 4)]
    assert all(c["median_s"] > 0 and c["peak_memory_gib"] > 0 and c["rounds"] == 2 for c in report["cases"])
    assert report["params"] == sum(p.size for p in build_model(SMALL_VIT).parameters())
    assert "img/s" in stdout and "GMACs" in stdout
    # the report names the processor it was measured on, as /proc/cpuinfo does
    with open("/proc/cpuinfo") as f:
        pairs = (line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        first = {key.strip(): value.strip() for key, value in pairs}
    machine = report["machine"]
    assert machine["cpu"] == first["model name"] and machine["vendor"] == first["vendor_id"]
    assert set(machine["vector_extensions"]) <= set(first["flags"].split())
    assert f"machine: {machine['cpu']}, " in stdout
    # each case's share of the machine's float32 limit (measured in the same run), from the report's own numbers
    assert machine["matmul_gflops"] > 0 and f"limit here: {machine['matmul_gflops']:.0f} GFLOP/s" in stdout
    for case in report["cases"]:
        achieved = 2 * report["gmacs"] * 1e9 * case["batch"] / case["median_s"]
        assert case["machine_fraction"] == pytest.approx(achieved / (machine["matmul_gflops"] * 1e9))
    assert "of the machine's limit" in stdout


@pytest.mark.slow
def test_benchmark_tool_times_a_training_step(tmp_path):
    report, stdout = run_benchmark(tmp_path, {"model": SMALL_VIT, "loss": {"type": "CrossEntropyLoss"}},
                                   "--mode", "train", "--batch-sizes", "3")
    (case,) = report["cases"]
    assert (case["mode"], case["batch"], case["loss"]) == ("train", 3, "CrossEntropyLoss")
    assert case["median_s"] > 0 and "s/step" in stdout
    achieved = 3 * 2 * report["gmacs"] * 1e9 * 3 / case["median_s"]  # forward and backward, batch 3
    assert case["machine_fraction"] == pytest.approx(achieved / (report["machine"]["matmul_gflops"] * 1e9))


@pytest.mark.slow
def test_benchmark_tool_runs_an_enhancer_tiled_and_exported(tmp_path):
    model = {"type": "UHDFour", "factor": 8, "extract_channels": 8, "low_channels": 16, "fuse_channels": 8}
    report, stdout = run_benchmark(tmp_path, {"model": model, "tiling": {"tile_size": [32, 48], "stride": [16, 24]}},
                                   "--size", "40x72", "--tiled")
    assert [(c["mode"], c["batch"]) for c in report["cases"]] == [("dygraph", 1), ("predictor", 1)]
    assert report["task"] == "enhancement" and report["size"] == [40, 72]
    assert "s/image" in stdout
    # the worker's log, shown as it comes
    assert "measuring dygraph, batch 1, 40x72 in tiles; warm-up runs: 0, timed runs: 1" in stdout
    assert not any("machine_fraction" in c for c in report["cases"])  # tiles overlap: not the frame's work


def test_an_existing_results_file_is_kept_and_said_so_before_measuring(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text('{"earlier": "results"}')
    cfg = tmp_path / "bench.yml"
    cfg.write_text(yaml.safe_dump({"model": SMALL_VIT}))
    result = subprocess.run([sys.executable, "tools/benchmark.py", "-c", str(cfg), "--json", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and f"refusing to replace the results file ({out})" in result.stderr
    assert out.read_text() == '{"earlier": "results"}' and "img/s" not in result.stdout
