"""Export a trained model for Paddle Inference, and optionally ONNX Runtime.

The export folder holds::

    model.json, model.pdiparams   the static graph and weights (Paddle 3 / PIR format)
    model.onnx                    with format 'onnx': the same graph, converted by paddle2onnx
    deploy.yml                    what ppuhd infer needs: format, task, input (tile) size,
                                  preprocessing transforms, class names, tiling

The eval-mode model is traced with a free batch size and, with
``dynamic_size``, free height and width (for models that accept any size).
Without it an enhancer is exported for fixed tiles: the graph takes tiles of
exactly the config's ``tiling.tile_size`` (or the given input size), and
ppuhd infer cuts every frame into such tiles. An ONNX export is always of a
fixed size, and is traced in its portable form
(:func:`ppuhd.paddle_compat.portable_graph`): only operators ONNX has; its
model.json is that portable graph too, so ``--backend paddle`` runs the same
computation.
"""

import contextlib
import logging
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import yaml

from .. import builder
from ..config import as_run_config
from ..config.schema import EXPORT_FORMATS
from ..contract import model_info
from ..data.transforms import ToCHW
from ..errors import UserError
from ..paddle_compat import portable_graph
from ..registry import TRANSFORMS, ConfigError
from ..weights import load_weights
from .layout import DEPLOY_FILE, MODEL_PREFIX, ONNX_FILE
from .predictor import create_predictor, require_onnx_packages

logger = logging.getLogger(__name__)

ONNX_OPSET = 17  # paddle2onnx raises it where an operator needs a newer one


class OnnxConversionError(UserError, RuntimeError):
    """paddle2onnx could not convert an exported graph."""


class _Traced(paddle.nn.Layer):
    """The layer handed to ``to_static``, which replaces its ``forward``: so the model itself stays eager
    (the export check compares the exported graph with the eager model)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _input_size(cfg, options, info, explicit):
    """(H, W) of the exported graph: ``explicit``, else for a fixed-tile enhancer the config's tile, else
    ``export.input_size``, else the model's own."""
    if explicit:
        return list(explicit)
    if info.task == "enhancement" and not options.dynamic_size and cfg.tiling is not None:
        return list(cfg.tiling.tile_size)
    if options.input_size:
        return list(options.input_size)
    if info.input_size:
        return list(info.input_size)
    raise ConfigError("set export.input_size: [H, W] in the config, or pass --input-size H W (the model does not "
                      "say its input size" + (", and the config has no tiling.tile_size" if info.task == "enhancement"
                                              else "") + ")")


def _fixed_tiling(cfg, tile_size):
    """The config's ``tiling`` section with tiles of ``tile_size``, the only size a fixed-tile export runs.

    A stride chosen for other tiles is dropped (half a tile is the default):
    a stride larger than the tile would leave pixels uncovered.
    """
    tiling = dict(cfg.get("tiling") or {})
    if tiling.get("stride") and list(tiling.get("tile_size") or tile_size) != list(tile_size):
        logger.info("tiling.stride %s was set for %s tiles; exporting %s tiles with the default stride (half a tile)",
                    tiling["stride"], tiling.get("tile_size"), tile_size)
        del tiling["stride"]
    tiling["tile_size"] = list(tile_size)
    return tiling


def _fixed_size_for_onnx(options, dynamic_size_asked):
    """ONNX exports have fixed H and W: refuse --dynamic-size, and say so when the config asks for free sizes."""
    if dynamic_size_asked:
        raise ConfigError("ONNX exports have a fixed input size (enhancers: fixed tiles, which ppuhd infer cuts "
                          "every frame into); leave out --dynamic-size, or export --format paddle for free sizes")
    if not options.dynamic_size:
        return
    logger.warning("export.dynamic_size is true in the config, but ONNX exports have a fixed input size: "
                   "this one is fixed")
    options.dynamic_size = False


def _preprocessing(cfg, info):
    """The evaluation transforms of the config, or else the model contract's; always ending in CHW."""
    if cfg.get("val_dataset"):
        transforms = list(cfg["val_dataset"].get("transforms") or [])
    else:
        transforms = [dict(t) for t in info.eval_transforms]
        logger.info("the config has no val_dataset: exporting the model's own evaluation preprocessing %s",
                    transforms)
    built = [builder.build(t, TRANSFORMS, f"val_dataset.transforms.{i}") for i, t in enumerate(transforms)]
    if not any(isinstance(t, ToCHW) for t in built):
        transforms.append({"type": "ToCHW"})  # the exported graph takes NCHW batches
    return transforms


def _class_names(cfg):
    """Class names from the validation dataset, if it can be built here (else None)."""
    if not cfg.get("val_dataset"):
        return None
    try:
        return list(getattr(cfg.build_dataset("val"), "class_names", None) or []) or None
    except (OSError, ValueError) as err:
        logger.warning("class names not exported: the validation dataset could not be read (%s)", err)
        return None


def export_model(cfg, weights, output_dir, ema=False, dynamic_size=None, input_size=None, export_format=None):
    """Export the model of ``cfg`` with ``weights``; returns the deploy description dict and the model.

    ``dynamic_size``, ``input_size`` and ``export_format`` ('paddle' or 'onnx')
    replace the config's ``export`` options when given.
    """
    cfg = as_run_config(cfg)
    options = cfg.export
    if export_format is not None:
        if export_format not in EXPORT_FORMATS:
            raise ConfigError(f"the export format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
        options.format = export_format
    if options.format == "onnx":
        require_onnx_packages("paddle2onnx", "onnxruntime", purpose="ONNX export")
        _fixed_size_for_onnx(options, bool(dynamic_size))
    elif dynamic_size is not None:
        options.dynamic_size = dynamic_size
    model = load_weights(cfg.build_model(), weights, ema=ema)
    model.eval()
    info = model_info(model)
    height, width = _input_size(cfg, options, info, input_size)
    fixed_tiles = info.task == "enhancement" and not options.dynamic_size
    shape = [None, 3, None, None] if options.dynamic_size else [None, 3, height, width]
    static = paddle.jit.to_static(
        _Traced(model), input_spec=[paddle.static.InputSpec(shape, "float32", name="image")], full_graph=True
    )
    os.makedirs(output_dir, exist_ok=True)
    with portable_graph() if options.format == "onnx" else contextlib.nullcontext():
        paddle.jit.save(static, os.path.join(output_dir, MODEL_PREFIX))  # traces the model
    onnx_path = os.path.join(output_dir, ONNX_FILE)
    if options.format == "onnx":
        convert_to_onnx(output_dir)
    elif os.path.exists(onnx_path):  # an earlier ONNX export being replaced: it would not match the new graph
        os.remove(onnx_path)
    deploy = {
        "format": options.format,
        "model": cfg["model"]["type"],
        "task": info.task,
        "input_size": [height, width],
        "dynamic_size": bool(options.dynamic_size),
        "tile_size": [height, width] if fixed_tiles else None,  # ppuhd infer runs tiles of exactly this size
        "transforms": _preprocessing(cfg, info),
        "class_names": _class_names(cfg) if info.task == "classification" else None,
        # ppuhd infer runs tiles the way evaluation does
        "tiling": _fixed_tiling(cfg, [height, width]) if fixed_tiles else cfg.get("tiling"),
        "input_multiple": info.input_multiple,
        "primary_output": info.primary_output,
    }
    with open(os.path.join(output_dir, DEPLOY_FILE), "w", encoding="utf-8") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)
    return deploy, model


def _log_errors(log):
    """paddle2onnx's error lines, without their colour codes."""
    lines = (re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines())
    return [line for line in lines if "ERROR" in line or "Error" in line]


def convert_to_onnx(model_dir, opset=ONNX_OPSET):
    """``model.json`` + ``model.pdiparams`` of ``model_dir`` -> ``model.onnx``, with paddle2onnx.

    paddle2onnx runs in a child process: on an operator it cannot convert it
    aborts its whole process (SIGABRT), which here becomes an
    :class:`OnnxConversionError` naming its error lines. It also leaves the
    ONNX graph as it converted it (no optimisation pass: its default one sets
    an environment variable that lets it install packages): ONNX Runtime
    optimises the graph when it loads it.
    """
    require_onnx_packages("paddle2onnx", purpose="ONNX export")
    target = os.path.join(model_dir, ONNX_FILE)
    partial = target + ".partial"
    command = [sys.executable, "-m", "paddle2onnx.command", "--model_dir", model_dir,
               "--model_filename", MODEL_PREFIX + ".json", "--params_filename", MODEL_PREFIX + ".pdiparams",
               "--save_file", partial, "--opset_version", str(opset), "--optimize_tool", "None"]
    env = {**os.environ, "GLOG_minloglevel": os.environ.get("GLOG_minloglevel", "2")}  # Paddle's INFO lines off
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not os.path.isfile(partial):
        if os.path.exists(partial):
            os.remove(partial)
        errors = _log_errors(result.stdout + result.stderr)
        raise OnnxConversionError(
            f"paddle2onnx could not convert {os.path.join(model_dir, MODEL_PREFIX + '.json')} to ONNX "
            f"(exit status {result.returncode}): {' | '.join(errors[-3:]) or 'no error message'}"
        )
    os.replace(partial, target)


def max_export_difference(model, output_dir, input_size, backend=None, batch=2, seed=0):
    """Largest |dygraph - exported| output difference on a random batch, run by ``backend`` (default: the format's)."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, *input_size)).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x))
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    got = create_predictor(output_dir, backend).run(x)
    return max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got))
