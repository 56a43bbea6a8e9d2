"""What evaluation leaves on disk: per-image results, enhanced images and previews."""

import csv
import json
import math
import os

import cv2
import numpy as np
import paddle.distributed as dist
import yaml

from ..data.image_io import write_image
from ..errors import UserError
from ..metrics.image_quality import quantize


def is_image_batch(prediction, target):
    """True when the prediction is a batch of images shaped like the target."""
    return prediction.ndim == 4 and target.ndim == 4 and list(prediction.shape) == list(target.shape)


def to_uint8_images(tensor):
    """NCHW [0, 1] floats to a list of HWC uint8 images (clamped and rounded, as saved PNGs)."""
    return [quantize(image) for image in tensor.numpy().transpose(0, 2, 3, 1)]


class ImageSaver:
    """Writes each enhanced image as ``<folder>/<input file stem>.png`` (8-bit, lossless)."""

    def __init__(self, folder, dataset):
        self.folder = folder
        self.dataset = dataset
        os.makedirs(folder, exist_ok=True)

    def __call__(self, batch, outputs, prediction):
        for index, image in zip(batch["index"].numpy(), to_uint8_images(prediction)):
            stem = os.path.splitext(self.dataset.name(int(index)))[0]
            write_image(os.path.join(self.folder, stem + ".png"), image)


def finite_or_none(obj):
    """``obj`` with every NaN/Inf float replaced by None, so it is valid JSON (NaN is not)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json(path, obj):
    """Write ``obj`` as strict JSON (non-finite numbers as null), atomically: readers never see half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(finite_or_none(obj), f, indent=2, allow_nan=False)
    os.replace(tmp, path)


class RunFolderError(UserError, ValueError):
    """A training output folder that cannot be read: missing, not a training's, or damaged."""


def read_run(output_dir):
    """What a training left in ``output_dir``: ``{'output_dir', 'model', 'final', 'best'}``.

    ``final`` holds the numeric metrics of its last validation; ``best`` the
    metric that decided its best checkpoint, its value and step (None before
    a finite one); ``model`` the model type of its merged config ('?' if that
    cannot be read). Training writes both files after every validation, so a
    running training can be read too.
    """
    metrics_file, config_file = os.path.join(output_dir, "metrics.json"), os.path.join(output_dir, "config.yml")
    if not os.path.isfile(metrics_file):
        raise RunFolderError(f"{output_dir} has no metrics.json: give a training's output folder "
                             "(its runtime.output_dir), after its first validation")
    try:
        with open(metrics_file, encoding="utf-8") as f:
            metrics = json.load(f)
        history, best = metrics["history"], metrics["best"]
        final = {k: v for k, v in history[-1].items() if k != "step" and isinstance(v, (int, float))}
        if best is not None:  # None: no validation gave a finite value yet
            best = {"metric": best["metric"], "value": float(best["value"]), "step": int(best["step"])}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise RunFolderError(f"{metrics_file} is not a training's metrics file (damaged, or written by "
                             f"something else): {type(err).__name__}: {err}") from None
    model = "?"
    if os.path.isfile(config_file):
        try:
            with open(config_file, encoding="utf-8") as f:
                model = str(yaml.safe_load(f)["model"]["type"])
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            pass  # the metrics alone still compare
    return {"output_dir": output_dir, "model": model, "final": final, "best": best}


def gather(items, world_size):
    """The concatenation of ``items`` (a list) over all processes."""
    if world_size <= 1:
        return list(items)
    collected = []
    dist.all_gather_object(collected, list(items))
    return [item for part in collected for item in part]


def write_per_image_csv(path, dataset, indices, records, means, left_out=()):
    """One row per image (by file name, in dataset order) and a final row of means.

    Images in ``left_out`` (unreadable, not scored) and the files the dataset
    left out when it was built (``dataset.excluded``) get a row with empty
    values and a note; the means are over the scored images only.
    """
    rows = [(index, record) for index, record in zip(indices, records)] + [(index, None) for index in left_out]
    fields = list(records[0]) if records else list(means)
    blank = [""] * len(fields)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *fields, "note"])
        for index, record in sorted(rows, key=lambda pair: pair[0]):
            if record is None:
                writer.writerow([dataset.name(index), *blank, "left out: unreadable"])
            else:
                writer.writerow([dataset.name(index), *(f"{record[k]:.6f}" for k in fields), ""])
        for file, reason in dataset.excluded:
            writer.writerow([os.path.basename(file), *blank, f"left out: {reason}"])
        writer.writerow(["mean", *(f"{means[k]:.6f}" for k in fields), f"{len(indices)} images"])


PREVIEW_COLUMNS = ("input", "output", "target")


class PreviewCollector:
    """Keeps the first ``count`` validation samples as input | output | target strips."""

    def __init__(self, count=4):
        self.count = count
        self.strips = []

    def __call__(self, batch, outputs, prediction):
        if len(self.strips) >= self.count or not is_image_batch(prediction, batch["target"]):
            return
        columns = [to_uint8_images(t) for t in (batch["image"], prediction, batch["target"])]
        for inputs, output, target in zip(*columns):
            if len(self.strips) < self.count:
                self.strips.append(np.concatenate([inputs, output, target], axis=1))

    def grid(self):
        """The strips stacked vertically (resized to the first one's width) under a header naming
        the columns, or None."""
        if not self.strips:
            return None
        width = self.strips[0].shape[1]
        rows = [s if s.shape[1] == width else _resize_to_width(s, width) for s in self.strips]
        return np.concatenate([column_header(width, PREVIEW_COLUMNS), *rows], axis=0)


def column_header(width, names):
    """A dark strip ``width`` wide with ``names`` centred over equal columns, in white, as large as
    the columns allow (at most OpenCV font scale 0.6, about 13 px high)."""
    column = width // len(names)
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    widest = max(cv2.getTextSize(name, font, 1.0, thickness)[0][0] for name in names)
    scale = min(0.6, 0.9 * column / widest)
    text_height = cv2.getTextSize("Tg", font, scale, thickness)[0][1]
    height = text_height + max(4, text_height // 2) * 2
    header = np.full((height, width, 3), 32, np.uint8)
    for i, name in enumerate(names):
        (text_width, _), _ = cv2.getTextSize(name, font, scale, thickness)
        origin = (i * column + (column - text_width) // 2, (height + text_height) // 2)
        cv2.putText(header, name, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return header


def _resize_to_width(image, width):
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
