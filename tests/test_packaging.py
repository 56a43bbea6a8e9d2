"""ppuhd as a package: configs by name, the model API, the ``ppuhd`` command, optional VisualDL,
and the installed copy (``pip install .``, ``pip install -e .``, Python 3.9 and 3.13) used from outside the clone."""

import glob
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

import ppuhd
from ppuhd.cli import build_parser
from ppuhd.cli import main as ppuhd_main
from ppuhd.config import load_config, resolve_config, shipped_configs
from ppuhd.engine.logger import VisualDLWriter
from ppuhd.registry import ConfigError
from test_tools import write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMM_VIT = os.path.join(REPO, "tests", "fixtures", "vit", "vit_tiny_timm.pth")
VIT_SMALL = dict(patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10, img_size=32)
# What `pip install .` needs of the clone: copied elsewhere, so that building writes nothing into the clone.
PACKAGE_SOURCES = ("pyproject.toml", "ppuhd_command.py", "ppuhd", "configs")
# Build with this Python's setuptools and wheel (requirements-dev.txt) instead of downloading them.
BUILD_OFFLINE = ("--no-deps", "--no-build-isolation")
GLOG_LINE = re.compile(r"^[IWE]\d{4} ", re.M)  # Paddle's C++ log lines, e.g. "I1202 04:58:09.55 ..."


# Configs by name


def test_a_shipped_config_is_found_by_name_with_or_without_folder_and_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    expected = os.path.join(REPO, "configs", "deit", "deit_small_patch16_224.yml")
    for name in ("deit_small_patch16_224", "deit_small_patch16_224.yml", "deit/deit_small_patch16_224",
                 "deit/deit_small_patch16_224.yml", "configs/deit/deit_small_patch16_224.yml"):
        assert os.path.samefile(resolve_config(name), expected), name
    cfg = load_config("deit_small_patch16_224")
    assert cfg["model"]["type"] == "deit_small_patch16_224"
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["lr_scheduler"]["warmup_epochs"] == 5  # from its _base_ files


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deit_small_patch16_224.yml").write_text(yaml.safe_dump({"model": {"type": "vit_tiny_patch16_224"}}))
    assert load_config("deit_small_patch16_224.yml")["model"]["type"] == "vit_tiny_patch16_224"


def test_an_unknown_config_name_says_so_and_suggests_close_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config not found: deit_smal_patch16_224 is neither a file nor the name "
                                          r"of a shipped config\. Did you mean 'deit_small_patch16_224'"):
        load_config("deit_smal_patch16_224")


def test_partial_configs_have_no_name():
    names = shipped_configs()
    assert "demo/vit_demo" in names and "deit/deit_small_patch16_224" in names
    assert not [n for n in names if n.startswith("_base_/") or n.rsplit("/", 1)[-1].startswith("_")]
    complete = [p for p in glob.glob(os.path.join(REPO, "configs", "*", "*.yml"))
                if not os.path.basename(p).startswith("_") and os.path.basename(os.path.dirname(p)) != "_base_"]
    assert len(names) == len(complete)


# list_models / create_model


def test_list_models_matches_a_glob_sorted():
    deit = ppuhd.list_models("deit*")
    assert deit == sorted(deit) and "deit_small_patch16_224" in deit and all(n.startswith("deit") for n in deit)
    assert ppuhd.list_models() == sorted(ppuhd.list_models()) and "VisionTransformer" in ppuhd.list_models()
    assert ppuhd.list_models("no_such_*") == []


def test_create_model_takes_constructor_overrides_and_weights_in_eval_mode():
    model = ppuhd.create_model("VisionTransformer", weights=TIMM_VIT, **VIT_SMALL)
    reference = ppuhd.build_model({"type": "VisionTransformer", **VIT_SMALL}, weights=TIMM_VIT)
    assert not model.training
    x = paddle.rand([2, 3, 32, 32])
    np.testing.assert_array_equal(model(x).numpy(), reference(x).numpy())
    assert ppuhd.create_model("deit_tiny_patch16_224", num_classes=3, img_size=32)(x).shape == [2, 3]


def test_create_model_names_a_wrong_model_or_argument():
    with pytest.raises(ConfigError, match="unknown models type 'deit_tiny'. Did you mean 'deit_tiny_patch16_224'"):
        ppuhd.create_model("deit_tiny")
    with pytest.raises(ConfigError, match="has no argument 'num_clases'. Did you mean 'num_classes'"):
        ppuhd.create_model("deit_tiny_patch16_224", num_clases=3)


# The command line


def test_no_command_accepts_abbreviated_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        ppuhd_main(["eval", "-c", "vit_demo", "--weights", "w", "--output", "results.json"])
    assert exit_.value.code == 2 and "unrecognized arguments: --output results.json" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no folder named results.json
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps subparsers only there
    assert set(commands) == {"train", "eval", "export", "infer", "convert", "compare", "benchmark", "prepare-patches", "app"}
    assert not parser.allow_abbrev and not [name for name, sub in commands.items() if sub.allow_abbrev]


def test_importing_ppuhd_leaves_paddles_log_level_alone():
    code = "import os; import ppuhd; print(os.environ.get('GLOG_minloglevel'))"
    env = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


# VisualDL is optional


def test_a_run_asked_to_log_to_missing_visualdl_warns_and_logs_the_rest(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # as if not installed: import raises ModuleNotFoundError
    with caplog.at_level(logging.WARNING, logger="ppuhd"):
        writer = VisualDLWriter(str(tmp_path / "vdl"), enabled=True)
    writer.scalar("train/loss", 1.0, 0)
    writer.close()
    assert writer.logdir is None and not (tmp_path / "vdl").exists()
    assert [r.getMessage() for r in caplog.records] == [
        "runtime.visualdl is true but VisualDL is not installed, so this run writes no VisualDL logs: pip install "
        "visualdl (or pip install 'ppuhd[visualdl]'), or set -o runtime.visualdl=false to silence this"]


def test_visualdl_is_an_extra_not_an_install_requirement():
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        text = f.read()
    dependencies = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    assert "visualdl" not in dependencies and re.search(r'^visualdl = \["visualdl"\]', text, re.M)
    with open(os.path.join(REPO, "requirements.txt")) as f:
        assert "visualdl" in f.read().split()  # the README's first command still installs it


# Installed copies, used from outside the clone


def run(command, cwd, timeout=600, expect_ok=True, **kwargs):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GLOG_minloglevel")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if expect_ok and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def copy_package_sources(target):
    os.makedirs(target)
    for name in PACKAGE_SOURCES:
        source = os.path.join(REPO, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, name), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install .` builds, made from a copy of the clone's package files."""
    work = tmp_path_factory.mktemp("wheel")
    source = copy_package_sources(str(work / "source"))
    run([sys.executable, "-m", "pip", "wheel", *BUILD_OFFLINE, "-w", str(work / "dist"), source], cwd=str(work))
    (path,) = glob.glob(str(work / "dist" / "ppuhd-*.whl"))
    return path


def new_venv(path, python=sys.executable, system_site_packages=False):
    """A fresh virtual environment; its Python's path."""
    run([python, "-m", "venv", *(["--system-site-packages"] if system_site_packages else []), str(path)],
        cwd=str(path.parent))
    return str(path / "bin" / "python")


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    """A venv sharing this Python's Paddle and libraries, with the wheel installed; and a folder outside the clone."""
    work = tmp_path_factory.mktemp("installed")
    python = new_venv(work / "venv", system_site_packages=True)
    run([python, "-m", "pip", "install", "--no-deps", wheel], cwd=str(work))
    outside = work / "elsewhere"
    outside.mkdir()
    return python, outside


def command(installed, *args, **kwargs):
    python, outside = installed
    return run([os.path.join(os.path.dirname(python), "ppuhd"), *args], cwd=str(outside), **kwargs)


SMOKE = """
import ppuhd, paddle
assert "site-packages" in ppuhd.__file__, ppuhd.__file__
print(ppuhd.list_models("deit*"))
model = ppuhd.create_model("deit_small_patch16_224")
print(list(model(paddle.rand([1, 3, 224, 224])).shape))
cfg = ppuhd.load_config("deit/deit_small_patch16_224.yml")  # _base_ files from the installed configs
print(cfg["model"]["type"], cfg["optimizer"]["type"], cfg["lr_scheduler"]["warmup_epochs"])
print(list(ppuhd.build_model("deit_tiny_patch16_224")(paddle.rand([1, 3, 224, 224])).shape))
"""
SMOKE_OUTPUT = ("['deit_base_distilled_patch16_224', 'deit_base_distilled_patch16_384', 'deit_base_patch16_224', "
                "'deit_base_patch16_384', 'deit_small_distilled_patch16_224', 'deit_small_patch16_224', "
                "'deit_tiny_distilled_patch16_224', 'deit_tiny_patch16_224']\n[1, 1000]\n"
                "deit_small_patch16_224 AdamW 5\n[1, 1000]\n")


@pytest.mark.slow
def test_the_installed_package_holds_every_module_and_config(installed):
    python, outside = installed
    site = run([python, "-c", "import os, ppuhd; print(os.path.dirname(ppuhd.__file__))"], cwd=str(outside))
    package = site.stdout.strip()
    assert package.startswith(os.path.dirname(os.path.dirname(python)))  # the venv's copy, not the clone

    def files(root, pattern):
        return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", pattern), recursive=True))

    assert files(package, "*.py") == files(os.path.join(REPO, "ppuhd"), "*.py")
    assert files(os.path.join(package, "configs"), "*.yml") == files(os.path.join(REPO, "configs"), "*.yml")
    photos = os.path.join("data", "photos")  # the demo photographs, package data
    assert files(os.path.join(package, photos), "*") == files(os.path.join(REPO, "ppuhd", photos), "*") != []


@pytest.mark.slow
def test_the_installed_api_from_outside_the_clone(installed):
    python, outside = installed
    assert run([python, "-c", SMOKE], cwd=str(outside)).stdout == SMOKE_OUTPUT


@pytest.mark.slow
def test_the_ppuhd_command_from_outside_the_clone(installed):
    help_text = command(installed, "--help").stdout
    assert all(name in help_text for name in ("train", "eval", "export", "infer", "convert", "benchmark"))
    assert "ppuhd train -c vit_demo" in command(installed, "train", "-c", "vit_demo", "--help").stdout
    wrong = command(installed, "eval", "-c", "vit_demo", "--weights", "w", "--output", "results.json",
                    expect_ok=False)
    assert wrong.returncode == 2 and "unrecognized arguments: --output results.json" in wrong.stderr
    assert not (installed[1] / "results.json").exists()
    unknown = command(installed, "train", "-c", "vit_dem", expect_ok=False)
    (line,) = unknown.stderr.strip().splitlines()
    assert unknown.returncode == 1 and re.fullmatch(
        r"config error: config not found: vit_dem is neither a file nor the name of a shipped config\. Did you "
        r"mean 'vit_demo'.*\? Shipped configs are in .*/site-packages/ppuhd/configs", line), line


@pytest.mark.slow
def test_a_tiny_run_of_the_installed_commands_without_visualdl(installed, tmp_path):
    python, outside = installed
    cfg = write_config(tmp_path)  # logs to VisualDL
    # The ppuhd script's own code, in a Python where VisualDL cannot be imported.
    no_visualdl = "import sys; sys.modules['visualdl'] = None; import ppuhd_command; sys.exit(ppuhd_command.main())"
    trained = run([python, "-c", no_visualdl, "train", "-c", cfg, "-o", "train.to_static=true"], cwd=str(outside))
    assert "VisualDL is not installed, so this run writes no VisualDL logs: pip install visualdl" in trained.stdout
    assert "Training finished." in trained.stdout and "VisualDL:" not in trained.stdout
    assert not GLOG_LINE.search(trained.stderr), trained.stderr  # a static-graph run: Paddle's executor is quiet
    exported = command(installed, "export", "-c", cfg, "--weights", str(tmp_path / "run" / "checkpoints" / "best"),
                       "--output", str(tmp_path / "export"))
    assert "max |dygraph - exported|" in exported.stdout and not GLOG_LINE.search(exported.stderr)


@pytest.mark.slow
def test_an_editable_install_finds_the_configs_of_its_clone(tmp_path):
    source = copy_package_sources(str(tmp_path / "clone"))
    python = new_venv(tmp_path / "venv", system_site_packages=True)
    run([python, "-m", "pip", "install", *BUILD_OFFLINE, "-e", source], cwd=str(tmp_path))
    code = ("import ppuhd; from ppuhd.config import resolve_config; print(ppuhd.__file__); "
            "print(resolve_config('vit_demo')); "
            "print(ppuhd.load_config('deit_small_patch16_224')['optimizer']['type'])")
    out = run([python, "-c", code], cwd=str(tmp_path)).stdout.split()
    assert out == [os.path.join(source, "ppuhd", "__init__.py"),
                   os.path.join(source, "configs", "demo", "vit_demo.yml"), "AdamW"]


def pyenv_python(version):
    """The newest pyenv-installed Python ``version`` (e.g. '3.9'), or None."""
    pyenv = shutil.which("pyenv")
    if not pyenv:
        return None
    root = run([pyenv, "root"], cwd=REPO).stdout.strip()
    found = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python")),
                   key=lambda p: [int(x) for x in p.split(os.sep)[-3].split(".")[1:] if x.isdigit()])
    return found[-1] if found else None


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.9", "3.13"])  # the oldest and newest Python the package supports
def test_the_package_installs_and_runs_on_the_oldest_and_newest_python(version, wheel, tmp_path):
    base = pyenv_python(version)
    if base is None:
        pytest.skip(f"no Python {version} from pyenv on this machine")
    python = new_venv(tmp_path / "venv", python=base)
    run([python, "-m", "pip", "install", "paddlepaddle==3.3.1", wheel], cwd=str(tmp_path), timeout=1200)
    assert run([python, "-c", SMOKE], cwd=str(tmp_path)).stdout == SMOKE_OUTPUT
    assert "ppuhd train -c vit_demo" in run([str(tmp_path / "venv" / "bin" / "ppuhd"), "train", "--help"],
                                             cwd=str(tmp_path)).stdout
