"""Image reading, datasets, transforms and samplers."""

import logging
import os
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from ppuhd import builder
from ppuhd.data.base import SampleKey
from ppuhd.data.classification import ImageFolder, ImageList
from ppuhd.data.demo import PHOTOS_DIR, DemoDataError, DemoLowLightPhotos, DemoShapes, demo_photos, draw_shape_image
from ppuhd.data import image_io
from ppuhd.data.image_io import ImageReadError, read_image
from ppuhd.data.paired import darken
from ppuhd.errors import UserError
from ppuhd.metrics.image_quality import quantize
from ppuhd.data.sampler import EvalBatchSampler, TrainBatchSampler
from ppuhd.config import load_config
from ppuhd.data.transforms import CenterCrop, RandomResizedCrop, Resize, ResizeShort
from ppuhd.registry import DATASETS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_bgr(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return str(path)


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)


# ------------------------------------------------------------ image files
def test_color_png_reads_as_rgb(tmp_path, rgb):
    path = save_bgr(tmp_path / "a.png", rgb[..., ::-1])
    np.testing.assert_array_equal(read_image(path), rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb):
    path = save_bgr(tmp_path / "g.png", rgb[..., 0])
    image = read_image(path)
    assert image.shape == (12, 10, 3)
    np.testing.assert_array_equal(image[..., 1], rgb[..., 0])


def test_rgba_drops_alpha(tmp_path, rgb):
    bgra = np.dstack([rgb[..., ::-1], np.full((12, 10), 7, np.uint8)])
    np.testing.assert_array_equal(read_image(save_bgr(tmp_path / "a.png", bgra)), rgb)


def test_16_bit_keeps_precision_as_float_and_scales_to_8_bit(tmp_path):
    deep = np.random.default_rng(1).integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    path = save_bgr(tmp_path / "d.png", deep)
    np.testing.assert_allclose(read_image(path, "float32"), deep[..., ::-1] / 65535.0, atol=1e-7)
    np.testing.assert_array_equal(read_image(path), np.rint(deep[..., ::-1] / 257.0).astype(np.uint8))


def test_every_conversion_is_noted_once_in_the_log(tmp_path, rgb, caplog, monkeypatch):
    monkeypatch.setattr(image_io, "_noted", set())
    gray = save_bgr(tmp_path / "g.png", rgb[..., 0])
    rgba = save_bgr(tmp_path / "a.png", np.dstack([rgb, rgb[..., :1]]))
    deep = save_bgr(tmp_path / "d.png", rgb.astype(np.uint16) * 257)
    with caplog.at_level("INFO", logger="ppuhd.data.image_io"):
        for path in (gray, rgba, deep, deep, gray):
            read_image(path)
        read_image(deep, "float32")
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        f"grayscale image repeated to three channels (first seen: {gray}); further such images are converted silently",
        f"image with an alpha channel: the alpha channel is dropped (first seen: {rgba}); further such images are "
        "converted silently",
        f"16-bit image scaled to 8 bits (0-255) (first seen: {deep}); further such images are converted silently",
        f"16-bit image read as floats in [0, 1], keeping its 16-bit precision (first seen: {deep}); further such "
        "images are converted silently",
    ]


@pytest.mark.parametrize("content, reason", [(None, "no such file"), (b"", "empty"), (b"not a png", "not a decodable")])
def test_bad_files_are_named(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"{path}.*{reason}"):
        read_image(str(path))


# --------------------------------------------------------------- datasets
def make_folder(root, per_class=3):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for i in range(per_class):
            save_bgr(root / name / f"{i}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return root


def test_cmyk_jpeg_reads_as_pil_converts_it(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    expected = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    np.testing.assert_array_equal(read_image(str(tmp_path / "cmyk.jpg")), expected)
    np.testing.assert_array_equal(read_image(str(tmp_path / "cmyk.jpg"), "float32"), expected / np.float32(255))


def test_image_folder_labels_classes_by_sorted_name(tmp_path):
    dataset = ImageFolder(str(make_folder(tmp_path / "set")))
    assert dataset.class_names == ["cat", "dog"] and len(dataset) == 6
    assert int(dataset[SampleKey(4)]["target"]) == 1


def test_image_list_reads_paths_and_labels_and_reports_bad_lines(tmp_path):
    root = make_folder(tmp_path / "set")
    (tmp_path / "list.txt").write_text("# comment\ncat/0.png 0\n\ndog/1.png 1\n")
    dataset = ImageList(str(root), str(tmp_path / "list.txt"))
    assert len(dataset) == 2 and int(dataset[1]["target"]) == 1
    (tmp_path / "broken.txt").write_text("cat/0.png 0\ncat/1.png zero\n")
    with pytest.raises(ValueError, match="broken.txt:2: expected 'relative/path label'"):
        ImageList(str(root), str(tmp_path / "broken.txt"))


def test_corrupt_image_stops_with_its_name_or_is_skipped_and_counted(tmp_path):
    root = make_folder(tmp_path / "set")
    (root / "cat" / "1.png").write_bytes(b"garbage")
    strict = ImageFolder(str(root))
    with pytest.raises(ImageReadError, match=r"cat/1.png.*on_error: skip"):
        strict[1]
    lenient = ImageFolder(str(root), on_error="skip")
    sample = lenient[1]
    assert int(sample["skipped"]) == 1 and int(sample["index"]) == 2


def test_missing_listed_file_is_named(tmp_path):
    root = make_folder(tmp_path / "set")
    (tmp_path / "list.txt").write_text("cat/9.png 0\n")
    with pytest.raises(ImageReadError, match="cat/9.png: no such file"):
        ImageList(str(root), str(tmp_path / "list.txt"))[0]


def test_dataset_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        ImageFolder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(str(tmp_path / "empty"))


def test_demo_shapes_are_generated_once_and_deterministically(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ppuhd.data.demo"):
        dataset = DemoShapes("val", root=str(tmp_path), train_per_class=2, val_per_class=3)
    assert len(dataset) == 18 and dataset.class_names == sorted(dataset.class_names)
    # first use says what it draws, where, and how big it turned out
    folder = tmp_path / "demo_shapes_v1_32px_2_3"
    size = sum(f.stat().st_size for f in folder.rglob("*.png"))
    assert caplog.messages == [
        f"first use of the demo data: drawing 6 classes of shapes x (2 training + 3 validation) images of 32x32 "
        f"into {folder} (once; later runs reuse it)",
        caplog.messages[1],
    ]
    assert caplog.messages[1].startswith(f"wrote 30 PNG files, {size / 1e6:.1f} MB, in ")
    assert caplog.messages[1].endswith(f" s to {folder}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ppuhd.data.demo"):
        again = DemoShapes("val", root=str(tmp_path), train_per_class=2, val_per_class=3)
    assert caplog.messages == []  # reused silently
    np.testing.assert_array_equal(dataset[5]["image"], again[5]["image"])
    first = draw_shape_image(0, 32, np.random.default_rng([1, 0]))
    np.testing.assert_array_equal(first, draw_shape_image(0, 32, np.random.default_rng([1, 0])))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".partial")]


# -------------------------------------------------------------- transforms
def test_augmentation_depends_only_on_the_sample_key(tmp_path):
    root = make_folder(tmp_path / "set")
    transforms = [{"type": "RandomResizedCrop", "size": 6}, {"type": "RandomHorizontalFlip"}]
    dataset = builder.build({"type": "ImageFolder", "root": str(root), "transforms": transforms}, DATASETS)
    a, b = dataset[SampleKey(2, 5, 7)], dataset[SampleKey(2, 5, 7)]
    np.testing.assert_array_equal(a["image"], b["image"])
    different = [dataset[SampleKey(2, epoch, 7)]["image"] for epoch in range(6)]
    assert any(not np.array_equal(different[0], d) for d in different[1:])


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    crop = RandomResizedCrop(8, scale=(0.2, 0.5), ratio=(0.5, 2.0))
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = crop.crop_box(100, 80, rng)
        assert 0 <= top and top + h <= 100 and 0 <= left and left + w <= 80
        assert 0.2 * 8000 * 0.9 <= h * w <= 0.5 * 8000 * 1.1 and 0.45 <= w / h <= 2.2


def test_resize_short_with_crop_ratio_then_center_crop():
    sample = {"image": np.zeros((300, 400, 3), np.uint8)}
    sample = ResizeShort(224, crop_ratio=0.875)(sample)
    assert sample["image"].shape == (256, 341, 3)
    assert CenterCrop(224)(sample)["image"].shape == (224, 224, 3)


def test_random_resized_crop_falls_back_to_the_centred_crop_within_the_ratio_range():
    class LargeAreas:  # every try asks for 90%+ of a 10x200 strip's area: none fits
        def uniform(self, low, high):
            return high

        def integers(self, low, high):
            raise AssertionError("no try fits, so no offset is drawn")

    assert RandomResizedCrop(8, scale=(0.9, 1.0)).crop_box(10, 200, LargeAreas()) == (0, 93, 10, 13)


@pytest.fixture
def photo_like():
    """Smooth gradients with sharp stripes: shrinking it aliases unless the resampler filters."""
    y, x = np.mgrid[0:90, 0:120]
    image = np.stack([x * 2, y * 2, np.where((x // 2) % 2, 230, 20)], axis=-1)
    return image.astype(np.uint8)


def test_pil_backend_is_pils_resampling_and_cv2_opencvs(photo_like):
    sample = {"image": photo_like}
    pil = Resize((30, 40), "bicubic")(dict(sample))["image"]  # the default backend
    np.testing.assert_array_equal(pil, np.asarray(Image.fromarray(photo_like).resize((40, 30), Image.Resampling.BICUBIC)))
    assert pil.flags.writeable  # later transforms may write in place, as on OpenCV's arrays
    opencv = Resize((30, 40), "bicubic", backend="cv2")(dict(sample))["image"]
    np.testing.assert_array_equal(opencv, cv2.resize(photo_like, (40, 30), interpolation=cv2.INTER_CUBIC))
    # Inside the border, PIL low-pass filters the stripes to grey; OpenCV samples them (near black or white).
    stripes = (slice(None), slice(2, -2), 2)
    assert np.abs(pil[stripes].astype(int) - 125).max() < 20
    assert np.abs(opencv[stripes].astype(int) - 125).max() > 80
    box = Resize((30, 40), "area")(dict(sample))["image"]
    np.testing.assert_array_equal(box, np.asarray(Image.fromarray(photo_like).resize((40, 30), Image.Resampling.BOX)))


def test_pil_backend_resizes_float_and_16_bit_images_like_8_bit_ones(photo_like):
    as_uint8 = ResizeShort(24)({"image": photo_like})["image"].astype(np.float64)
    for image, to_8_bit in [(photo_like / np.float32(255), 255), (photo_like.astype(np.float64) / 255, 255),
                            (photo_like.astype(np.uint16) * 257, 1 / 257)]:
        out = ResizeShort(24)({"image": image, "target": image[..., :1]})
        assert out["image"].dtype == image.dtype and out["image"].shape == (24, 32, 3)
        assert out["target"].shape == (24, 32, 1)  # a one-channel image of the pair resizes channel by channel
        # 32-bit float resampling (unclipped, unrounded) against PIL's 8-bit fixed point: within a level
        assert np.abs(out["image"] * to_8_bit - as_uint8).max() <= 1.0


def test_resizing_transforms_name_bad_backends_interpolations_and_pixel_types(photo_like):
    with pytest.raises(ValueError, match="backend must be one of pil, cv2, got 'torch'"):
        Resize(8, backend="torch")
    with pytest.raises(ValueError, match="interpolation must be one of nearest, bilinear, bicubic, area, lanczos"):
        RandomResizedCrop(8, interpolation="hamming", backend="cv2")
    with pytest.raises(TypeError, match="the pil backend resizes uint8, uint16 and float images, got int32"):
        Resize(8)({"image": photo_like.astype(np.int32)})
    assert Resize(8, backend="cv2")({"image": photo_like.astype(np.float32)})["image"].shape == (8, 8, 3)


def shipped(folder):
    names = sorted(n for n in os.listdir(os.path.join(REPO, "configs", folder)) if n.endswith(".yml") and n[0] != "_")
    return [load_config(os.path.join(REPO, "configs", folder, name)) for name in names]


@pytest.mark.parametrize("folder", ["deit", "vit", "regnet"])
def test_configs_resize_with_pil_where_the_official_pipeline_did(folder):
    """DeiT, RegNetY (DeiT's pipeline) and timm's ViT evaluation resize with torchvision on PIL
    images; the original ViT's training crop with TensorFlow, which like OpenCV does not filter."""
    for cfg in shipped(folder):
        for split, expected in (("val_dataset", "pil"), ("train_dataset", "cv2" if folder == "vit" else "pil")):
            resizing = [t for t in cfg[split]["transforms"] if t["type"] in ("Resize", "ResizeShort", "RandomResizedCrop")]
            assert resizing and all(t.get("backend") == expected for t in resizing), (cfg[split], split)


def test_geometric_transforms_apply_to_both_images_of_a_pair():
    image = np.arange(10 * 12 * 3, dtype=np.float32).reshape(10, 12, 3)
    sample = {"image": image, "target": image.copy()}
    out = RandomResizedCrop(6, interpolation="nearest")(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(out["image"], out["target"])


# ---------------------------------------------------------------- samplers
def test_processes_split_each_global_batch_as_one_process_would_see_it():
    single = list(TrainBatchSampler(50, 8, seed=3))
    ranks = [list(TrainBatchSampler(50, 4, rank=r, world_size=2, seed=3)) for r in range(2)]
    assert len(single) == len(ranks[0]) == 6
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][step] + ranks[1][step])


def test_repeated_augmentation_sends_each_copy_to_another_process():
    world, repeats = 3, 3
    ranks = [list(TrainBatchSampler(60, 4, rank=r, world_size=world, seed=0, repeats=repeats))
             for r in range(world)]
    keys = [k for rank in ranks for batch in rank for k in batch]
    assert len(keys) == 60  # an epoch keeps its length
    counts = np.bincount([k.index for k in keys], minlength=60)
    assert set(counts) == {0, repeats} and (counts == repeats).sum() == 20
    for index in np.flatnonzero(counts):
        holders = [r for r in range(world) for batch in ranks[r] for k in batch if k.index == index]
        copies = sorted(k.copy for k in keys if k.index == index)
        assert sorted(holders) == list(range(world)) and copies == [0, 1, 2]


def test_resume_starts_mid_epoch_at_the_same_batches():
    sampler = TrainBatchSampler(40, 4, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert list(sampler) == full[3:] and len(sampler) == len(full) - 3


def test_epochs_are_shuffled_differently_and_cover_every_sample():
    sampler = TrainBatchSampler(12, 4, seed=0)
    orders = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        orders.append([key.index for batch in sampler for key in batch])
    assert sorted(orders[0]) == list(range(12)) and orders[0] != orders[1]


def test_last_partial_batch_is_filled_when_not_dropped():
    sampler = TrainBatchSampler(10, 4, drop_last=False)
    batches = list(sampler)
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)


def test_eval_sampler_covers_every_sample_exactly_once_across_processes():
    seen = [k.index for r in range(3) for batch in EvalBatchSampler(10, 3, rank=r, world_size=3) for k in batch]
    assert sorted(seen) == list(range(10))


def test_the_demo_photographs_ship_as_package_data_with_their_sources():
    photos = demo_photos()
    names = [os.path.basename(p) for p in photos]
    assert names == ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"]
    with open(os.path.join(PHOTOS_DIR, "SOURCES.md"), encoding="utf-8") as f:
        sources = f.read()
    for name in names:
        (row,) = [line for line in sources.splitlines() if line.startswith(f"| `{name}`")]
        assert "public domain" in row or "CC0" in row
        assert max(read_image(os.path.join(PHOTOS_DIR, name)).shape[:2]) == 256
    with open(os.path.join(REPO, "pyproject.toml"), encoding="utf-8") as f:
        assert '"ppuhd.data" = ["photos/*.png", "photos/SOURCES.md"]' in f.read()


def test_the_low_light_photographs_are_the_same_darkening_on_every_first_use(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ppuhd.data.demo"):
        first = DemoLowLightPhotos(root=str(tmp_path / "a"))
    folder = tmp_path / "a" / "demo_lowlight_photos_v1"
    assert f"into {folder}" in caplog.text and "wrote 8 PNG files" in caplog.text
    second = DemoLowLightPhotos(root=str(tmp_path / "b"))
    assert len(first) == 4 and [first.name(i) for i in range(4)] == [second.name(i) for i in range(4)]
    for index, photo in enumerate(demo_photos()):
        name = os.path.basename(photo)
        assert (folder / "low" / name).read_bytes() == (tmp_path / "b" / "demo_lowlight_photos_v1" / "low" / name).read_bytes()
        sample = first[index]
        np.testing.assert_array_equal(sample["target"], read_image(photo, "float32"))  # the photograph itself
        # the synthetic pipeline's darkening, seeded by the file name alone
        expected = darken(read_image(photo, "float32"), np.random.default_rng([1, zlib.crc32(name.encode())]))
        np.testing.assert_array_equal(read_image(str(folder / "low" / name)), quantize(expected))
        assert sample["image"].mean() < 0.6 * sample["target"].mean()


def test_missing_photographs_or_a_damaged_cache_say_what_to_do(tmp_path):
    DemoLowLightPhotos(root=str(tmp_path))
    folder = tmp_path / "demo_lowlight_photos_v1"
    (folder / "low" / "coffee.png").unlink()
    with pytest.raises(DemoDataError, match=rf"{folder / 'low'} should hold astronaut.png, chelsea.png, coffee.png, "
                                            rf"rocket.png but holds astronaut.png, chelsea.png, rocket.png; delete "
                                            rf"{folder} and the next run writes it again") as caught:
        DemoLowLightPhotos(root=str(tmp_path))
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    empty = tmp_path / "no_photos"
    empty.mkdir()
    with pytest.raises(DemoDataError, match=rf"the demo photographs are missing: no PNG files in {empty}; .*reinstall"):
        demo_photos(str(empty))
