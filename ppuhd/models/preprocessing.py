"""Evaluation preprocessing recipes, as transform configs, for the model contracts of the families.

Each is the pipeline a family's official weights were evaluated with (see the
docs of each model); ``ModelInfo.eval_transforms`` holds them, and the shipped
configs' ``val_dataset.transforms`` equal them (a test checks).
"""

IMAGENET = None  # Normalize's defaults: ImageNet's mean and std (the configs leave them out)
TO_MINUS_ONE_ONE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # pixels to [-1, 1]


def _normalize(statistics):
    return {"type": "Normalize", **(statistics or {})}


def resize_whole(size, interpolation="bilinear", statistics=TO_MINUS_ONE_ONE):
    """The whole image resized to ``size`` (the original ViT's evaluation), pixels to [-1, 1]."""
    return ({"type": "Resize", "size": size, "interpolation": interpolation}, _normalize(statistics), {"type": "ToCHW"})


def resize_and_center_crop(size, crop_ratio=0.875, interpolation="bicubic", statistics=IMAGENET):
    """Shorter side to ``size / crop_ratio``, centre crop ``size`` (DeiT's and timm's evaluation)."""
    return (
        {"type": "ResizeShort", "size": size, "crop_ratio": crop_ratio, "interpolation": interpolation},
        {"type": "CenterCrop", "size": size},
        _normalize(statistics),
        {"type": "ToCHW"},
    )


# Enhancers take the whole image, in [0, 1]; the network pads it to its size multiple.
WHOLE_IMAGE = ({"type": "ToCHW"},)
