"""Tiled inference for image-to-image models: bounded memory on 4K and 8K frames.

The image is padded (reflect, bottom and right) to the model's size multiple,
cut into tiles of ``tile_size`` every ``stride`` pixels, the tiles are run in
batches of ``tile_batch``, and the outputs are merged:

* ``blend: feather`` (the default): each tile's weight rises from near 0 at
  its inner edges, where the model saw padding instead of the image, to 1
  across its overlap with the neighbouring tile (a raised cosine, so two
  tiles crossfade), and stays 1 at the image's own borders: no seams;
* ``blend: average``: overlapping outputs are averaged uniformly, as the
  official LLFormer test does (720x1280 tiles at stride 360x640); the output
  jumps where a tile starts or ends, since a model whose output depends on
  context gives different values there with and without the tile's padding.

The last tile of each row and column is moved back to end at the border, so
every pixel is covered whatever the size (the official tiling leaves the
border uncovered when the size minus the tile is not a multiple of the
stride; on UHD frames the two coincide). Peak memory is that of one tile
batch plus a few image-sized buffers, independent of how large the image is.
When a single tile covers the image, the result is exactly the full-frame
output.
"""

import logging
import time

import numpy as np
import paddle
import paddle.nn as nn

from ..config import TilingOptions, options_from_dict
from ..config.schema import TILE_BLENDS
from ..contract import model_info, select_output
from ..registry import ConfigError
from .logger import Progress

logger = logging.getLogger(__name__)

BLENDS = TILE_BLENDS  # the first is the default


def tile_starts(length, tile, stride):
    """Start offsets along one axis: every ``stride``, the last one snapped to end at ``length``."""
    if tile >= length:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def ramp(length):
    """``length`` weights rising from near 0 to near 1 (a raised cosine); a ramp and its mirror image sum
    to 1 at every pixel, so two tiles crossfade over their overlap without changing its brightness."""
    return (np.sin(np.pi / 2 * np.arange(1, length + 1) / (length + 1)) ** 2).astype(np.float32)


def feather_windows(starts, tile):
    """The 1-D feather weights of each tile along one axis (``starts`` from :func:`tile_starts`).

    Each side a tile shares with a neighbour ramps over their whole overlap
    (wider for a last tile snapped back to the border); sides on the image's
    border stay at 1, as no other tile covers them.
    """
    windows = []
    for index, start in enumerate(starts):
        window = np.ones(tile, np.float32)
        if index > 0:
            overlap = starts[index - 1] + tile - start
            window[:overlap] *= ramp(overlap)
        if index + 1 < len(starts):
            overlap = start + tile - starts[index + 1]
            window[tile - overlap :] *= ramp(overlap)[::-1]
        windows.append(window)
    return windows


def _pad_to_multiple(image, multiple):
    height, width = image.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    return np.pad(image, [(0, 0), (0, pad_h), (0, pad_w)], mode="reflect")


def tiled_forward(run, image, tile_size, stride=None, tile_batch=1, blend=BLENDS[0], multiple=1, log_seconds=None,
                  on_progress=None):
    """Apply ``run`` (NCHW float32 array -> NCHW array) to a CHW ``image`` tile by tile.

    Args:
        run: the model on a batch of tiles; returns the enhanced tiles.
        image: C x H x W float32 array.
        tile_size: (tile H, tile W); clipped to the (padded) image.
        stride: (H, W) step between tiles; default: half a tile (50% overlap).
        tile_batch: tiles per call of ``run``.
        blend: 'feather' (seamless) or 'average' (the official LLFormer merge).
        multiple: pad the image to a multiple of this first (the model's).
        log_seconds: log progress with an ETA at most this often (None: never).
        on_progress: called as ``on_progress(tiles done, tiles in all)`` after each call of ``run``.
    Returns the C x H x W output, cropped to the image's size.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    height, width = image.shape[-2:]
    padded = _pad_to_multiple(image, multiple)
    full_h, full_w = padded.shape[-2:]
    tile_h, tile_w = min(tile_size[0], full_h), min(tile_size[1], full_w)
    stride_h, stride_w = stride if stride else (max(tile_h // 2, 1), max(tile_w // 2, 1))
    if stride_h > tile_h or stride_w > tile_w:
        raise ConfigError(f"tiling: stride {[stride_h, stride_w]} is larger than the tile {[tile_h, tile_w]} (H, W), "
                          "so the tiles would leave gaps; use a stride of at most the tile")
    rows, columns = tile_starts(full_h, tile_h, stride_h), tile_starts(full_w, tile_w, stride_w)
    if len(rows) == len(columns) == 1:  # one tile covers it all: exactly the full-frame output
        output = run(padded[None])[0][:, :height, :width]
        if on_progress is not None:
            on_progress(1, 1)
        return output
    if blend == "feather":
        row_windows, column_windows = feather_windows(rows, tile_h), feather_windows(columns, tile_w)
    else:
        row_windows = [np.ones(tile_h, np.float32)] * len(rows)
        column_windows = [np.ones(tile_w, np.float32)] * len(columns)
    corners = [(i, j) for i in range(len(rows)) for j in range(len(columns))]
    merged, total = None, np.zeros((full_h, full_w), np.float32)
    progress, last_log = Progress(len(corners), unit="tile"), time.perf_counter()
    for first in range(0, len(corners), tile_batch):
        group = corners[first : first + tile_batch]
        tiles = np.stack([padded[:, rows[i] : rows[i] + tile_h, columns[j] : columns[j] + tile_w] for i, j in group])
        outputs = run(tiles)
        if merged is None:
            merged = np.zeros((outputs.shape[1], full_h, full_w), np.float32)
        for (i, j), output in zip(group, outputs):
            weight = np.outer(row_windows[i], column_windows[j])
            top, left = rows[i], columns[j]
            merged[:, top : top + tile_h, left : left + tile_w] += output * weight
            total[top : top + tile_h, left : left + tile_w] += weight
        progress.update(len(group))
        if on_progress is not None:
            on_progress(first + len(group), len(corners))
        if log_seconds is not None and time.perf_counter() - last_log > log_seconds:
            logger.info("tiles %s", progress.line())
            last_log = time.perf_counter()
    merged /= total
    return merged[:, :height, :width]


class TiledModel(nn.Layer):
    """Wraps an image-to-image model so its forward runs tile by tile (inference only).

    Returns the merged primary output (the full-resolution image), one image
    of the batch at a time; used by evaluation when a config has a ``tiling``
    section. Args as :func:`tiled_forward`; ``multiple`` defaults to the
    model's ``input_multiple``.
    """

    def __init__(self, model, tile_size, stride=None, tile_batch=1, blend=BLENDS[0], multiple=None, log_seconds=None):
        super().__init__()
        self.model = model
        self.info = model_info(model)
        self.options = dict(tile_size=tile_size, stride=stride, tile_batch=tile_batch, blend=blend,
                            multiple=multiple or self.info.input_multiple, log_seconds=log_seconds)

    def _run(self, tiles):
        return select_output(self.model(paddle.to_tensor(tiles)), self.info.primary_output).numpy()

    def forward(self, x):
        with paddle.no_grad():
            images = [tiled_forward(self._run, image, **self.options) for image in x.numpy()]
        return paddle.to_tensor(np.stack(images))


def tiling_arguments(tiling, input_multiple=1):
    """:func:`tiled_forward`'s keyword arguments from a config's ``tiling`` section
    (None: full frames); ``multiple`` defaults to the model's ``input_multiple``."""
    if tiling is None:
        return None
    options = options_from_dict(TilingOptions, tiling, "tiling")
    return dict(tile_size=options.tile_size, stride=options.stride, tile_batch=options.tile_batch,
                blend=options.blend, multiple=options.multiple or input_multiple)
