"""Pre-cutting training pairs into sub-images (tools/prepare_patches.py)."""

import os
import subprocess
import sys

import cv2
import numpy as np

from ppuhd.data.patches import cut_positions, prepare_patches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_pairs(root, count=2, size=(30, 50)):
    rng = np.random.default_rng(0)
    images = {}
    for i in range(count):
        for folder in ("low", "high"):
            image = rng.integers(0, 65536, (*size, 3), dtype=np.uint16)
            os.makedirs(root / folder, exist_ok=True)
            cv2.imwrite(str(root / folder / f"img{i}.png"), image)
            images[(folder, i)] = image
    return images


def test_positions_snap_to_the_border_like_the_official_script():
    assert cut_positions(2160, 720, 720) == [0, 720, 1440]
    assert cut_positions(30, 16, 16) == [0, 14]
    assert cut_positions(30, 16, 16, thresh=14) == [0]  # a remainder of 14 pixels is dropped
    assert cut_positions(10, 16, 16) == [0]


def test_pairs_are_cut_together_keeping_names_and_16_bit_values(tmp_path):
    images = make_pairs(tmp_path / "train")
    written = prepare_patches(str(tmp_path / "train" / "low"), str(tmp_path / "train" / "high"),
                              str(tmp_path / "sub"), size=(16, 20), step=(16, 20), workers=1)
    assert written == 2 * 2 * 3  # 2 pairs x rows [0, 14] x columns [0, 20, 30]
    names = sorted(os.listdir(tmp_path / "sub" / "low"))
    assert names == sorted(os.listdir(tmp_path / "sub" / "high")) and names[0] == "img0_s001.png"
    sixth = cv2.imread(str(tmp_path / "sub" / "high" / "img1_s006.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sixth, images[("high", 1)][14:30, 30:50])
    again = prepare_patches(str(tmp_path / "train" / "low"), str(tmp_path / "train" / "high"),
                            str(tmp_path / "sub"), size=(16, 20), step=(16, 20), workers=1)
    assert again == 0  # already done: an interrupted run restarts where it stopped


def test_the_tool_names_unpaired_images(tmp_path):
    make_pairs(tmp_path / "train")
    os.remove(tmp_path / "train" / "high" / "img1.png")
    result = subprocess.run([sys.executable, "tools/prepare_patches.py", "--input-dir", str(tmp_path / "train" / "low"),
                             "--target-dir", str(tmp_path / "train" / "high"), "--output", str(tmp_path / "sub")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "img1.png has no target" in result.stderr and "Traceback" not in result.stderr
