"""Evaluation preprocessing recipes, as transform configs, for the model contracts of the families.

Each is the pipeline a family's official weights were evaluated with (see the
docs of each model); ``ModelInfo.eval_transforms`` holds them, and the shipped
configs' ``val_dataset.transforms`` equal them (a test checks). Every official
classification pipeline here resizes with torchvision on PIL images, so the
recipes name the PIL backend.
"""

import math

IMAGENET = None  # Normalize's defaults: ImageNet's mean and std (the configs leave them out)
TO_MINUS_ONE_ONE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # pixels to [-1, 1]


def _normalize(statistics):
    return {"type": "Normalize", **(statistics or {})}


def resize_and_center_crop(size, crop_ratio=0.875, interpolation="bicubic", statistics=IMAGENET):
    """Resize to ``size / crop_ratio`` and centre crop ``size``, with PIL's resampling.

    A square ``size`` (an int): the shorter side to ``int(size / crop_ratio)``,
    as torchvision's ``Resize(int)`` + ``CenterCrop`` in DeiT's and timm's
    evaluation (224 / 0.875 = 256). An (H, W) size: each side to
    ``floor(side / crop_ratio)`` regardless of the aspect ratio, timm's
    ``crop_mode='squash'``.
    """
    if isinstance(size, int):
        resize = {"type": "ResizeShort", "size": size, "crop_ratio": crop_ratio}
    else:
        resize = {"type": "Resize", "size": [math.floor(side / crop_ratio) for side in size]}
    return (
        {**resize, "interpolation": interpolation, "backend": "pil"},
        {"type": "CenterCrop", "size": size},
        _normalize(statistics),
        {"type": "ToCHW"},
    )


# Enhancers take the whole image, in [0, 1]; the network pads it to its size multiple.
WHOLE_IMAGE = ({"type": "ToCHW"},)
