"""Image classification datasets: a folder per class, or a list file."""

import os

import numpy as np

from ..registry import DATASETS
from .base import BaseDataset
from .image_io import IMAGE_EXTENSIONS, read_image


class ClassificationDataset(BaseDataset):
    """``samples``: list of (path, label); ``class_names``: label -> name."""

    def __init__(self, samples, class_names, transforms=None, on_error="raise"):
        super().__init__(transforms, on_error)
        if not samples:
            raise ValueError("the dataset has no images")
        self.samples = samples
        self.class_names = class_names

    def __len__(self):
        return len(self.samples)

    def describe(self, index):
        path, label = self.samples[index]
        return f"{path} (label {label})"

    def load(self, index, rng=None):
        path, label = self.samples[index]
        return {"image": read_image(path), "target": np.int64(label)}


@DATASETS.register()
class ImageFolder(ClassificationDataset):
    """ImageNet layout: ``root/<class name>/<image>``; classes sorted by name.

    Args:
        root: folder with one sub-folder per class.
        transforms: list of transforms.
        on_error: 'raise' or 'skip' for unreadable images.
    """

    def __init__(self, root, transforms=None, on_error="raise"):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset folder not found: {root}")
        class_names = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
        if not class_names:
            raise ValueError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
        samples = []
        for label, name in enumerate(class_names):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
                samples += [
                    (os.path.join(dirpath, f), label) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)
                ]
        if not samples:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
        super().__init__(samples, class_names, transforms, on_error)


@DATASETS.register()
class ImageList(ClassificationDataset):
    """PaddleClas-style list file: one ``relative/path label`` per line.

    Args:
        root: folder the paths are relative to.
        list_file: the list; blank lines and lines starting with '#' are ignored.
        class_names: optional file with one class name per line (line i = label i).
        transforms, on_error: as for ImageFolder.
    """

    def __init__(self, root, list_file, class_names=None, transforms=None, on_error="raise"):
        samples = []
        with open(list_file, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                path, _, label = line.rpartition(" ")
                if not path or not label.lstrip("-").isdigit() or int(label) < 0:
                    raise ValueError(f"{list_file}:{line_no}: expected 'relative/path label', got {line!r}")
                samples.append((os.path.join(root, path.strip()), int(label)))
        num_classes = max(label for _, label in samples) + 1 if samples else 0
        names = [str(i) for i in range(num_classes)]
        if class_names:
            with open(class_names, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
            if len(names) < num_classes:
                raise ValueError(f"{class_names} names {len(names)} classes, but {list_file} uses {num_classes}")
        super().__init__(samples, names, transforms, on_error)
