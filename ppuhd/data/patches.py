"""Pre-cut large training pairs into sub-images, for faster loading of 4K and 8K sets.

As LLFormer's ``scripts/extract_subimages_UHD.py``: 720x1280 sub-images every
720x1280 pixels (no overlap), the last row and column moved back to end at
the border (unless fewer than ``thresh`` pixels remain), named
``<stem>_sNNN.png`` in row-major order, PNG compression level 1. Here both
images of a pair are cut together into ``<output>/<input name>/`` and
``<output>/<target name>/`` so the pairs still match by name, each file is
written under a temporary name and renamed, and images already cut are
skipped, so an interrupted run can simply be started again.
"""

import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from .image_io import ImageReadError
from .paired import match_pairs


def cut_positions(length, size, step, thresh=0):
    """Offsets along one axis, the last one snapped to the border if more than ``thresh`` pixels remain."""
    if size >= length:
        return [0]
    positions = list(range(0, length - size + 1, step))
    if length - (positions[-1] + size) > thresh:
        positions.append(length - size)
    return positions


def _read_raw(path):
    """The image as stored (8- or 16-bit, any channels): sub-images keep the original's bytes."""
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    return image


def _write_atomically(path, image):
    tmp = f"{path}.tmp-{os.getpid()}.png"
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode {path}")
    encoded.tofile(tmp)
    os.replace(tmp, path)


def cut_pair(job):
    """Cut one pair; returns the number of sub-image pairs written (0 if already done)."""
    input_path, target_path, folders, size, step, thresh = job
    stem = os.path.splitext(os.path.basename(input_path))[0]
    images = [_read_raw(input_path), _read_raw(target_path)]
    if images[0].shape[:2] != images[1].shape[:2]:
        raise ImageReadError(input_path, f"size differs from its target {target_path}")
    height, width = images[0].shape[:2]
    corners = [(top, left) for top in cut_positions(height, size[0], step[0], thresh)
               for left in cut_positions(width, size[1], step[1], thresh)]
    names = [f"{stem}_s{i:03d}.png" for i in range(1, len(corners) + 1)]
    if all(os.path.isfile(os.path.join(folder, names[-1])) for folder in folders):
        return 0  # the last sub-image is written last: this pair is complete
    for name, (top, left) in zip(names, corners):
        for image, folder in zip(images, folders):
            _write_atomically(os.path.join(folder, name), image[top : top + size[0], left : left + size[1]])
    return len(names)


def prepare_patches(input_dir, target_dir, output_dir, size=(720, 1280), step=(720, 1280), thresh=0, workers=None,
                    on_pair_done=None):
    """Cut every pair of ``input_dir`` / ``target_dir``; returns the number of sub-image pairs written."""
    folders = [os.path.join(output_dir, os.path.basename(os.path.normpath(d))) for d in (input_dir, target_dir)]
    for folder in folders:
        os.makedirs(folder, exist_ok=True)
    jobs = [(i, t, folders, tuple(size), tuple(step), thresh) for i, t in match_pairs(input_dir, target_dir)[0]]
    written = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for count in pool.map(cut_pair, jobs):
            written += count
            if on_pair_done:
                on_pair_done(len(jobs))
    return written
