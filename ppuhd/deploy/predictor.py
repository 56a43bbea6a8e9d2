"""Run an exported model with Paddle Inference (oneDNN on CPU, GPU when available)."""

import os

import numpy as np
import paddle.inference as paddle_infer
import yaml

from .. import builder
from ..errors import UserError
from ..data.image_io import read_image
from ..data.transforms import Compose
from ..engine.runtime import gpu_available
from ..runtime import available_cores
from ..registry import TRANSFORMS
from .layout import DEPLOY_FILE, MODEL_PREFIX


class ExportFolderError(UserError, ValueError):
    """A folder that is not (or no longer) a complete export."""


class InputSizeError(UserError, ValueError):
    """An image whose size, after the exported preprocessing, is not the one the model was exported for."""


class Predictor:
    """A ``paddle.inference`` predictor for an export folder.

    Args:
        model_dir: folder written by ``ppuhd export`` (tools/export.py).
        device: 'auto' (GPU if available), 'cpu' or 'gpu'.
        num_threads: CPU threads (default: all cores).
        use_onednn: oneDNN kernels on CPU (faster convolutions; Paddle 3.3.1 keeps a
            reordered copy of each convolution's plain-layout input for the
            predictor's life, so peak memory is higher).
    """

    def __init__(self, model_dir, device="auto", num_threads=None, use_onednn=True):
        graph = os.path.join(model_dir, MODEL_PREFIX + ".json")
        params = os.path.join(model_dir, MODEL_PREFIX + ".pdiparams")
        for path in (graph, params):
            if not os.path.isfile(path):
                raise ExportFolderError(f"{path} not found: is {model_dir} a folder written by ppuhd export "
                                        "(tools/export.py)?")
        config = paddle_infer.Config(graph, params)
        config.disable_glog_info()
        if device == "gpu" or (device == "auto" and gpu_available()):
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(num_threads or available_cores())
            if use_onednn:
                config.enable_onednn()
            else:  # a CPU config starts with oneDNN on: leaving it alone would keep it
                config.disable_onednn()
        self.predictor = paddle_infer.create_predictor(config)
        deploy_path = os.path.join(model_dir, DEPLOY_FILE)
        self.deploy = {}
        if os.path.isfile(deploy_path):
            with open(deploy_path, encoding="utf-8") as f:
                self.deploy = yaml.safe_load(f) or {}
        self.transforms = Compose(
            builder.build(t, TRANSFORMS, f"deploy.transforms.{i}")
            for i, t in enumerate(self.deploy.get("transforms") or [])
        )

    def run(self, batch):
        """Outputs (list of numpy arrays) for a float32 NCHW batch."""
        (name,) = self.predictor.get_input_names()
        handle = self.predictor.get_input_handle(name)
        handle.reshape(batch.shape)
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.predictor.get_output_names()]

    def predict(self, batch):
        """The prediction (the model's primary output) for a float32 NCHW batch."""
        return self.run(batch)[self.deploy.get("primary_output", 0)]

    @property
    def task(self):
        return self.deploy.get("task", "classification")

    @property
    def input_dtype(self):
        """How images are read for this model: enhancement models as floats in [0, 1] (keeping
        16-bit precision), classifiers as 8-bit, as in training."""
        return "float32" if self.task == "enhancement" else "uint8"

    def preprocess(self, path):
        """Read an image file and apply the exported evaluation transforms (CHW float32)."""
        return self.prepare(read_image(path, self.input_dtype), path)

    def prepare(self, image, source):
        """The exported evaluation transforms applied to an RGB array of :attr:`input_dtype`
        (an image or a video frame; ``source`` names it in errors)."""
        image = self.transforms({"image": image})["image"]
        expected = self.deploy.get("input_size")
        if expected and not self.deploy.get("dynamic_size") and list(image.shape[1:]) != list(expected):
            raise InputSizeError(
                f"{source}: the model was exported for {expected[1]}x{expected[0]} (WxH) inputs, and the "
                f"exported preprocessing gives {image.shape[2]}x{image.shape[1]}; resize the image, or add "
                "Resize/CenterCrop to the config's val_dataset.transforms and export again"
            )
        return image


def top_k(logits, k, class_names=None):
    """``[(class name or index, probability), ...]`` for one row of logits, best first."""
    shifted = logits - logits.max()
    probs = np.exp(shifted) / np.exp(shifted).sum()
    best = np.argsort(-probs)[:k]
    return [((class_names[i] if class_names else int(i)), float(probs[i])) for i in best]
