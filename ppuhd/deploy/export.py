"""Export a trained model to a Paddle inference model (``paddle.jit.save``).

The export folder holds::

    model.json, model.pdiparams   the static graph and weights (Paddle 3 / PIR format)
    deploy.yml                    what tools/infer.py needs: task, input size,
                                  preprocessing transforms, class names

The eval-mode model is traced with a free batch size and, with
``dynamic_size``, free height and width (for models that accept any size).
"""

import logging
import os

import numpy as np
import paddle
import yaml

from .. import builder
from ..config import ExportOptions, options_from_dict
from ..data.transforms import ToCHW
from ..registry import DATASETS, MODELS, TRANSFORMS
from ..weights import load_weights
from .layout import DEPLOY_FILE, MODEL_PREFIX
from .predictor import Predictor

logger = logging.getLogger(__name__)



def _input_size(cfg, options, model):
    if options.input_size:
        return list(options.input_size)
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None:
        return list(patch_embed.img_size)
    raise ValueError("set export.input_size: [H, W] in the config (the model does not say its input size)")


def _class_names(cfg):
    """Class names from the validation dataset, if it can be built here (else None)."""
    dataset_cfg = cfg.get("val_dataset")
    if not dataset_cfg:
        return None
    try:
        return list(getattr(builder.build(dataset_cfg, DATASETS, "val_dataset"), "class_names", None) or []) or None
    except (OSError, ValueError) as err:
        logger.warning("class names not exported: the validation dataset could not be read (%s)", err)
        return None


def export_model(cfg, weights, output_dir, ema=False, dynamic_size=None, input_size=None):
    """Export the model of ``cfg`` with ``weights``; returns the deploy description dict."""
    options = options_from_dict(ExportOptions, cfg.get("export"), "export")
    if dynamic_size is not None:
        options.dynamic_size = dynamic_size
    if input_size is not None:
        options.input_size = list(input_size)
    model = builder.build(cfg["model"], MODELS, "model")
    load_weights(model, weights, ema=ema)
    model.eval()
    height, width = _input_size(cfg, options, model)
    shape = [None, 3, None, None] if options.dynamic_size else [None, 3, height, width]
    static = paddle.jit.to_static(
        model, input_spec=[paddle.static.InputSpec(shape, "float32", name="image")], full_graph=True
    )
    os.makedirs(output_dir, exist_ok=True)
    paddle.jit.save(static, os.path.join(output_dir, MODEL_PREFIX))
    val_transforms = list((cfg.get("val_dataset") or {}).get("transforms") or [])
    if not cfg.get("val_dataset"):
        logger.warning("the config has no val_dataset: the export's preprocessing is only the conversion to "
                       "CHW; add the evaluation transforms (normalisation, resizing) to val_dataset to export them")
    built = [builder.build(t, TRANSFORMS, f"val_dataset.transforms.{i}") for i, t in enumerate(val_transforms)]
    if not any(isinstance(t, ToCHW) for t in built):
        val_transforms.append({"type": "ToCHW"})  # the exported graph takes NCHW batches
    task = getattr(model, "task", "classification")
    deploy = {
        "model": cfg["model"]["type"],
        "task": task,
        "input_size": [height, width],
        "dynamic_size": bool(options.dynamic_size),
        "transforms": val_transforms,
        "class_names": _class_names(cfg) if task == "classification" else None,
        "tiling": cfg.get("tiling"),  # tools/infer.py runs tiles the way evaluation does
        "input_multiple": getattr(model, "input_multiple", 1),
    }
    with open(os.path.join(output_dir, DEPLOY_FILE), "w", encoding="utf-8") as f:
        yaml.safe_dump(deploy, f, sort_keys=False)
    return deploy, model


def max_export_difference(model, output_dir, input_size, batch=2, seed=0):
    """Largest |dygraph - exported| output difference on a random batch."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, *input_size)).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x))
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    got = Predictor(output_dir).run(x)
    return max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got))
