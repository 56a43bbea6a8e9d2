"""Run an export folder: Paddle Inference (oneDNN on CPU; GPU, fp16, TensorRT) or ONNX Runtime.

Both backends have the same surface (:class:`ExportedModel`): ``run`` (all
outputs of a float32 NCHW batch), ``predict`` (the prediction), ``preprocess``
(an image file as the model takes it), ``task`` and ``deploy`` (the export's
``deploy.yml``). :func:`create_predictor` picks one by name.
"""

import importlib.util
import os

import numpy as np
import paddle.inference as paddle_infer
import yaml

from .. import builder
from ..data.image_io import read_image
from ..data.transforms import Compose
from ..engine.runtime import gpu_available
from ..errors import UserError
from ..registry import TRANSFORMS
from ..runtime import available_cores
from .layout import DEPLOY_FILE, MODEL_PREFIX, ONNX_FILE

BACKENDS = ("paddle", "onnxruntime")
PRECISIONS = ("fp32", "fp16")
DEFAULT_GPU_MEMORY_MB = 256  # Paddle Inference's initial GPU memory pool (it grows as needed)


class ExportFolderError(UserError, ValueError):
    """A folder that is not (or no longer) a complete export."""


class InputSizeError(UserError, ValueError):
    """An image whose size, after the exported preprocessing, is not the one the model was exported for."""


class BackendError(UserError, RuntimeError):
    """A backend, device or option this machine (or this export) cannot run."""


def read_deploy(model_dir):
    """The export's ``deploy.yml`` as a dict (empty for exports made before it existed)."""
    _require_folder(model_dir)
    path = os.path.join(model_dir, DEPLOY_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            deploy = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ExportFolderError(f"{path} is not valid YAML ({' '.join(str(err).split())}): "
                                    "export the model again with ppuhd export") from None
    if not isinstance(deploy, dict):
        raise ExportFolderError(f"{path} holds no settings (a {type(deploy).__name__}): "
                                "export the model again with ppuhd export")
    return deploy


def _require_folder(model_dir):
    if not os.path.isdir(model_dir):
        what = "is a file, not a folder" if os.path.exists(model_dir) else "does not exist"
        raise ExportFolderError(f"export folder {model_dir} {what}: give the folder ppuhd export wrote "
                                "(its --output, e.g. output/vit_demo/export)")


def _require_files(model_dir, *names, hint="is {dir} a folder written by ppuhd export (tools/export.py)?"):
    _require_folder(model_dir)
    for name in names:
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            raise ExportFolderError(f"{path} not found: {hint.format(dir=model_dir)}")


def _first_line(err):
    """The first line of a backend's error message (Paddle's and ONNX Runtime's run to many lines)."""
    lines = str(err).strip().splitlines()
    return lines[0].strip() if lines else type(err).__name__


class ExportedModel:
    """What every backend shares: the export's ``deploy.yml``, its preprocessing and fixed tiles.

    A backend implements :meth:`run`.
    """

    def __init__(self, model_dir):
        self.model_dir = model_dir
        self.deploy = read_deploy(model_dir)
        self.transforms = Compose(
            builder.build(t, TRANSFORMS, f"deploy.transforms.{i}")
            for i, t in enumerate(self.deploy.get("transforms") or [])
        )

    def run(self, batch):
        """Outputs (list of numpy arrays) for a float32 NCHW batch."""
        raise NotImplementedError

    @property
    def task(self):
        return self.deploy.get("task", "classification")

    @property
    def input_dtype(self):
        """How images are read for this model: enhancement models as floats in [0, 1] (keeping
        16-bit precision), classifiers as 8-bit, as in training."""
        return "float32" if self.task == "enhancement" else "uint8"

    @property
    def tile_size(self):
        """[H, W] of the tiles a fixed-tile enhancer export runs, else None."""
        return self.deploy.get("tile_size")

    def predict(self, batch):
        """The prediction (the model's primary output) for a float32 NCHW batch.

        A fixed-tile enhancer export takes batches of at most its tile size:
        smaller ones (the tiles of a frame smaller than a tile) are
        reflect-padded at the bottom and right to the tile, as the models pad
        themselves, and the output cropped back.
        """
        primary = self.deploy.get("primary_output", 0)
        if not self.tile_size:
            return self.run(batch)[primary]
        height, width = batch.shape[2:]
        tile_h, tile_w = self.tile_size
        if height > tile_h or width > tile_w:
            raise InputSizeError(f"this export runs tiles of {tile_w}x{tile_h} (WxH) and was given {width}x{height}: "
                                 "run it tiled (ppuhd infer does), or export with --dynamic-size")
        if (height, width) == (tile_h, tile_w):
            return self.run(batch)[primary]
        padded = np.pad(batch, [(0, 0), (0, 0), (0, tile_h - height), (0, tile_w - width)], mode="reflect")
        return self.run(padded)[primary][:, :, :height, :width]

    def preprocess(self, path):
        """Read an image file and apply the exported evaluation transforms (CHW float32)."""
        return self.prepare(read_image(path, self.input_dtype), path)

    def prepare(self, image, source):
        """The exported evaluation transforms applied to an RGB array of :attr:`input_dtype`
        (an image or a video frame; ``source`` names it in errors)."""
        image = self.transforms({"image": image})["image"]
        expected = self.deploy.get("input_size")
        fixed = not self.deploy.get("dynamic_size") and not self.tile_size  # tiles: any image size
        if expected and fixed and list(image.shape[1:]) != list(expected):
            raise InputSizeError(
                f"{source}: the model was exported for {expected[1]}x{expected[0]} (WxH) inputs, and the "
                f"exported preprocessing gives {image.shape[2]}x{image.shape[1]}; resize the image, or add "
                "Resize/CenterCrop to the config's val_dataset.transforms and export again"
            )
        return image


def gpu_flags_given(gpu_id=None, tensorrt=False, precision="fp32"):
    """The command-line flags of the Paddle Inference GPU options that were given (not at their defaults)."""
    return [flag for flag, given in (("--gpu-id", gpu_id is not None), ("--tensorrt", tensorrt),
                                     ("--precision fp16", precision != "fp32")) if given]


def _use_gpu(device):
    if device == "gpu" and not gpu_available():
        raise BackendError("--device gpu: Paddle sees no GPU here (a CPU build of Paddle, or no CUDA device)")
    return device == "gpu" or (device == "auto" and gpu_available())


class Predictor(ExportedModel):
    """A ``paddle.inference`` predictor for an export folder.

    Args:
        model_dir: folder written by ``ppuhd export`` (tools/export.py).
        device: 'auto' (GPU if available), 'cpu' or 'gpu'.
        num_threads: CPU threads (default: all cores).
        use_onednn: oneDNN kernels on CPU (faster convolutions; Paddle 3.3.1 keeps a
            reordered copy of each convolution's plain-layout input for the
            predictor's life, so peak memory is higher). Default: on, except
            for the portable graph of an ONNX export, which Paddle 3.3.1's
            oneDNN kernels compute wrongly (UHDFour's DFT products of
            convolution outputs, LLFormer's unrolled attention: errors of 0.1
            with IR passes off too); its plain CPU kernels are exact.
        gpu_id: the GPU to run on (default 0).
        precision: 'fp32' or 'fp16' (GPU only).
        tensorrt: run the graph's supported parts through Paddle Inference's
            TensorRT subgraph engine, at ``precision`` (GPU only).
        gpu_memory_mb: initial size of Paddle Inference's GPU memory pool.

    The GPU options are errors on a CPU (never silently ignored).
    """

    def __init__(self, model_dir, device="auto", num_threads=None, use_onednn=None, gpu_id=None, precision="fp32",
                 tensorrt=False, gpu_memory_mb=DEFAULT_GPU_MEMORY_MB):
        _require_files(model_dir, MODEL_PREFIX + ".json", MODEL_PREFIX + ".pdiparams")
        super().__init__(model_dir)
        if precision not in PRECISIONS:
            raise BackendError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        config = paddle_infer.Config(os.path.join(model_dir, MODEL_PREFIX + ".json"),
                                     os.path.join(model_dir, MODEL_PREFIX + ".pdiparams"))
        config.disable_glog_info()
        if _use_gpu(device):
            mode = paddle_infer.PrecisionType.Half if precision == "fp16" else paddle_infer.PrecisionType.Float32
            config.enable_use_gpu(gpu_memory_mb, gpu_id or 0, mode)
            if tensorrt:
                config.enable_tensorrt_engine(precision_mode=mode, use_calib_mode=False)
        else:
            gpu_options = gpu_flags_given(gpu_id, tensorrt, precision)
            if gpu_options:
                where = "Paddle sees no GPU here" if device == "auto" else "--device cpu was asked for"
                raise BackendError(f"{', '.join(gpu_options)}: GPU options, and this run is on the CPU ({where}); "
                                   "leave them out on a CPU")
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(num_threads or available_cores())
            if use_onednn is None:
                use_onednn = self.deploy.get("format") != "onnx"
            if use_onednn:
                config.enable_onednn()
            else:  # a CPU config starts with oneDNN on: leaving it alone would keep it
                config.disable_onednn()
        try:
            self.predictor = paddle_infer.create_predictor(config)
        except (ValueError, RuntimeError, OSError) as err:  # Paddle's InvalidArgument and similar, as ValueError
            raise ExportFolderError(f"Paddle Inference cannot load the model in {model_dir} ({_first_line(err)}): "
                                    "the files are damaged or not from ppuhd export; export the model again") from None

    def run(self, batch):
        (name,) = self.predictor.get_input_names()
        handle = self.predictor.get_input_handle(name)
        handle.reshape(batch.shape)
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        self.predictor.run()
        return [self.predictor.get_output_handle(n).copy_to_cpu() for n in self.predictor.get_output_names()]


def require_onnx_packages(*packages, purpose):
    """Stop with the install command if any of the optional ONNX ``packages`` is missing."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendError(f"{purpose} needs {' and '.join(missing)}, which is not installed: "
                           "pip install 'ppuhd[onnx]' (or pip install paddle2onnx onnxruntime)")


class OnnxPredictor(ExportedModel):
    """An ONNX Runtime session for an export folder written with ``--format onnx``.

    Args:
        model_dir: the export folder (holds ``model.onnx``).
        device: 'auto' (CUDA if this onnxruntime has it), 'cpu' or 'gpu'.
        num_threads: CPU threads (default: all cores).
    """

    def __init__(self, model_dir, device="auto", num_threads=None):
        require_onnx_packages("onnxruntime", purpose="the onnxruntime backend")
        import onnxruntime

        _require_files(model_dir, ONNX_FILE, hint="export the model with ppuhd export --format onnx")
        super().__init__(model_dir)
        cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if device == "gpu" and not cuda:
            raise BackendError("--device gpu: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider"] if cuda and device != "cpu" else []
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or available_cores()
        options.log_severity_level = 3  # errors only: paddle2onnx leaves unused constants, each one a warning
        try:
            self.session = onnxruntime.InferenceSession(os.path.join(model_dir, ONNX_FILE), options,
                                                        providers=providers + ["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own exception classes (InvalidProtobuf, Fail, ...) share no public base
            raise ExportFolderError(f"ONNX Runtime cannot load {os.path.join(model_dir, ONNX_FILE)} "
                                    f"({_first_line(err)}): the file is damaged or not an ONNX model; "
                                    "export the model again with ppuhd export --format onnx") from None
        (self.input_name,) = [i.name for i in self.session.get_inputs()]

    def run(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})


def default_backend(model_dir):
    """The backend an export was made for: 'onnxruntime' for ``--format onnx``, else 'paddle'."""
    return "onnxruntime" if read_deploy(model_dir).get("format") == "onnx" else "paddle"


def create_predictor(model_dir, backend=None, **options):
    """The predictor of ``backend`` ('paddle' or 'onnxruntime'; default: the one the export was made for).

    ``options`` go to :class:`Predictor` or :class:`OnnxPredictor`.
    """
    backend = backend or default_backend(model_dir)
    if backend not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return (OnnxPredictor if backend == "onnxruntime" else Predictor)(model_dir, **options)


def top_k(logits, k, class_names=None):
    """``[(class name or index, probability), ...]`` for one row of logits, best first."""
    shifted = logits - logits.max()
    probs = np.exp(shifted) / np.exp(shifted).sum()
    best = np.argsort(-probs)[:k]
    return [((class_names[i] if class_names else int(i)), float(probs[i])) for i in best]
