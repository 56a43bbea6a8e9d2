"""The model contract: what every model says about itself, read in one place.

Each model family sets ``self.info = ModelInfo(...)`` in its constructor from
its own arguments, and a named variant may add what only it knows (the
evaluation preprocessing its official weights were measured with), as timm's
``pretrained_cfg``. Export, inference, tiling, evaluation and the benchmark
read these facts through :func:`model_info` instead of guessing.
"""

import dataclasses
from typing import Optional, Tuple

TASKS = ("classification", "enhancement")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    task: str = "classification"  # classification (logits) or enhancement (images of the input's size)
    num_classes: int = 0  # classifiers: outputs per image (0: a feature extractor)
    input_size: Optional[Tuple[int, int]] = None  # (H, W) it was built for: the default for export and benchmarks
    input_multiple: int = 1  # H and W the network computes with are multiples of this (it pads to them itself)
    primary_output: int = 0  # of a tuple of outputs, the one that is the prediction (scored, saved, tiled)
    eval_transforms: Tuple[dict, ...] = ()  # the evaluation preprocessing of its official weights (transform configs)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    def with_updates(self, **facts):
        return dataclasses.replace(self, **facts)


def model_info(model):
    """The :class:`ModelInfo` a model declares (its ``info``); TypeError if it declares none."""
    info = getattr(model, "info", None)
    if not isinstance(info, ModelInfo):
        raise TypeError(f"{type(model).__name__} declares no ModelInfo: set self.info = ModelInfo(...) in its "
                        "__init__ (see ppuhd/contract.py)")
    return info


def select_output(outputs, index=0):
    """Output ``index`` of a model that returns a tuple (or list) of outputs; a single output as it is."""
    return outputs[index] if isinstance(outputs, (tuple, list)) else outputs
