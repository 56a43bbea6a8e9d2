"""Videos through ppuhd infer: every frame as the predictor enhances it, at the input's size and frame rate,
with progress, and damaged files named in one line; and the reader and writer underneath."""

import logging
import os
import re

import cv2
import numpy as np
import pytest

from ppuhd.commands.infer import VideoForClassifierError, list_inputs, output_paths
from ppuhd.data.video_io import VideoReadError, VideoReader, VideoWriter
from ppuhd.deploy import Predictor
from ppuhd.engine.logger import Progress
from ppuhd.engine.outputs import OutputError
from ppuhd.engine.tiling import tiled_forward, tiling_arguments
from ppuhd.metrics.image_quality import quantize
from test_infer import TINY_UHDFOUR, export, images, infer

TILING = {"tile_size": [32, 48], "stride": [16, 32]}  # 2x2 overlapping tiles on a 48x80 frame


@pytest.fixture(scope="module")
def tiled_enhancer(tmp_path_factory):
    return export(tmp_path_factory.mktemp("tiled"), TINY_UHDFOUR, sections={"tiling": TILING}, dynamic_size=True,
                  input_size=(32, 32))


@pytest.fixture(scope="module")
def predictor(tiled_enhancer):
    return Predictor(tiled_enhancer)


def scene(count=6, size=(48, 80)):
    """Dim RGB frames: gradients with a bright square moving across, content a codec keeps well."""
    y, x = np.mgrid[: size[0], : size[1]]
    frames = []
    for i in range(count):
        frame = np.stack([10 + x // 3, 20 + y // 2, 15 + (x + y) // 6], axis=-1)
        frame[8:24, 4 + 8 * i : 20 + 8 * i] += 40
        frames.append(frame.astype(np.uint8))
    return frames


def write_video(path, frames, fps, fourcc):
    """Frames (RGB) written with OpenCV directly, as any other program would."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def decode(path):
    """(RGB frames, fps, the header's frame count), read with OpenCV directly."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    return frames, capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))


def enhanced_frames(predictor, frames, tiling=TILING, bits=8):
    """The predictor's output for each RGB uint8 frame as ``bits``-bit integers, tiled as the export says
    (None: full frames)."""
    options = tiling_arguments(tiling, predictor.deploy["input_multiple"])
    outputs = []
    for frame in frames:
        image = frame.transpose(2, 0, 1).astype(np.float32) / np.float32(255)  # as an 8-bit image is read
        output = tiled_forward(predictor.predict, image, **options) if options else predictor.predict(image[None])[0]
        outputs.append(quantize(output.transpose(1, 2, 0), bits))
    return outputs


def test_a_folder_of_videos_and_images_is_enhanced_frame_by_frame_with_the_exports_tiling(tiled_enhancer, predictor,
                                                                                          tmp_path):
    folder = tmp_path / "low"
    originals = images(folder, ["photo.png"], size=(48, 80))
    write_video(folder / "clip.avi", scene(), 12.5, "MJPG")
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    originals.update({name: (folder / name).read_bytes() for name in ("clip.avi", "broken.mp4")})
    result = infer(tiled_enhancer, "--input", folder, "--output", tmp_path / "out", "--on-error", "skip",
                   "--video-codec", "ffv1", "--bit-depth", "16")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["clip.mkv", "photo.png"]
    assert {name: (folder / name).read_bytes() for name in originals} == originals

    frames, fps, count = decode(tmp_path / "out" / "clip.mkv")
    assert (len(frames), count, fps, frames[0].shape) == (6, 6, 12.5, (48, 80, 3))
    decoded_input = decode(folder / "clip.avi")[0]
    expected = enhanced_frames(predictor, decoded_input)
    np.testing.assert_array_equal(np.stack(frames), np.stack(expected))  # FFV1 is lossless
    assert not np.array_equal(expected[0], enhanced_frames(predictor, decoded_input[:1], tiling=None)[0])
    photo = cv2.imread(str(tmp_path / "out" / "photo.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    low_photo = cv2.imread(str(folder / "photo.png"))[..., ::-1]
    np.testing.assert_array_equal(photo, enhanced_frames(predictor, [low_photo], bits=16)[0])

    clip, out = folder / "clip.avi", tmp_path / "out" / "clip.mkv"
    assert "--bit-depth 16 applies to images: videos are written with 8 bits per channel" in result.stdout
    assert f"{clip}: 80x48, 12.500 fps, 6 frames" in result.stdout
    duration = r"\d:\d\d:\d\d"
    assert re.search(rf"{re.escape(str(clip))}: frames 1/6 \(17%\) [\d.]+ frame/s elapsed {duration} eta {duration}",
                     result.stdout), result.stdout
    assert re.search(rf"{re.escape(f'{clip} -> {out}')} \(6 frames in {duration}; files 2/3 \(67%\)", result.stdout)
    assert f"skipping cannot read video {folder / 'broken.mp4'}: not a decodable video" in result.stdout
    assert f"1 of 3 input(s) could not be read and were left out: {folder / 'broken.mp4'}" in result.stdout


def test_mp4v_videos_are_what_opencvs_own_mp4v_encoding_of_the_frames_gives(tmp_path):
    frames = scene()
    with VideoWriter(str(tmp_path / "ours.mp4"), 10, "mp4v") as writer:
        for frame in frames:
            writer.write(frame)
    ours, fps, count = decode(tmp_path / "ours.mp4")
    assert (len(ours), count, fps, ours[0].shape) == (6, 6, 10.0, (48, 80, 3))
    # lossy, but deterministic: exactly OpenCV's own encoding of the same frames
    np.testing.assert_array_equal(np.stack(ours), np.stack(decode(write_video(tmp_path / "cv2.mp4", frames, 10,
                                                                              "mp4v"))[0]))
    assert not np.array_equal(np.stack(ours), np.stack(frames))


def truncated(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_a_video_that_stops_decoding_part_way_ends_the_run_in_one_line_and_leaves_nothing(tiled_enhancer, tmp_path):
    clip = truncated(write_video(tmp_path / "cut.mkv", scene(), 10, "FFV1"), 0.8)
    frames, _, count = decode(clip)
    assert 0 < len(frames) < count == 6  # the header promises six; fewer decode
    result = infer(tiled_enhancer, "--input", clip, "--output", tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr == (f"error: cannot read video {clip}: decoding stopped after frame {len(frames)}, "
                             f"{len(frames) / 10:.2f} s into the 0.60 s its header gives (truncated or damaged file) "
                             "(--on-error skip leaves such files out)\n")
    assert os.listdir(tmp_path / "out") == []  # not even the temporary file


@pytest.mark.parametrize("damage, reason", [
    ("missing", "no such file"),
    ("empty", "the file is empty"),
    ("random bytes", "not a decodable video (corrupt, truncated or unsupported format)"),
    ("truncated mp4", "not a decodable video (corrupt, truncated or unsupported format)"),  # its index is at the end
])
def test_the_reader_names_a_video_it_cannot_open(tmp_path, damage, reason):
    path = tmp_path / "clip.mp4"
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif damage == "truncated mp4":
        truncated(write_video(path, scene(), 10, "mp4v"), 0.9)
    with pytest.raises(VideoReadError, match=f"^cannot read video {re.escape(str(path))}: {re.escape(reason)}$"):
        VideoReader(str(path))


def test_the_reader_yields_the_frames_that_decode_before_naming_the_damage(tmp_path):
    written = scene()
    clip = truncated(write_video(tmp_path / "cut.mkv", written, 10, "FFV1"), 0.8)
    got = []
    with VideoReader(str(clip)) as video, pytest.raises(VideoReadError, match=r"cut.mkv: decoding stopped after "
                                                                             r"frame \d, 0.\d0 s into the 0.60 s"):
        for frame in video:
            got.append(frame)
    assert 0 < len(got) < 6
    np.testing.assert_array_equal(np.stack(got), np.stack(written[: len(got)]))  # FFV1 is lossless


def test_a_variable_rate_clip_whose_frame_count_is_an_estimate_reads_to_its_end(tmp_path):
    clip = os.path.join(os.path.dirname(__file__), "fixtures", "video", "variable_rate.mkv")
    with VideoReader(clip) as video:
        assert (video.frame_count, video.fps) == (99, 50.0)  # FFmpeg's estimate: 1.98 s at the higher rate
        assert len(list(video)) == 60  # 10 at 10 fps, then 50 at 50 fps
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(open(clip, "rb").read()[:12000])
    with VideoReader(str(cut)) as video, pytest.raises(VideoReadError, match=r"s into the 1.98 s its header gives"):
        list(video)


def test_the_writer_keeps_rate_and_frames_exactly_and_only_renames_a_finished_video(tmp_path):
    written, path = scene(3), tmp_path / "out" / "clip.mkv"
    with VideoWriter(str(path), 29.97, "ffv1") as writer:
        for frame in written:
            writer.write(frame)
        assert not path.exists()  # under a temporary name until finished
    assert os.listdir(tmp_path / "out") == ["clip.mkv"]
    with VideoReader(str(path)) as video:
        assert (video.fps, video.width, video.height, video.frame_count) == (29.97, 80, 48, 3)
        np.testing.assert_array_equal(np.stack(list(video)), np.stack(written))

    with pytest.raises(KeyboardInterrupt), VideoWriter(str(tmp_path / "out" / "stopped.mkv"), 10, "ffv1") as writer:
        writer.write(written[0])
        raise KeyboardInterrupt
    assert os.listdir(tmp_path / "out") == ["clip.mkv"]  # the interrupted one is gone, temporary file and all
    with pytest.raises(ValueError, match="ffv1 videos are written as .mkv files"):
        VideoWriter(str(tmp_path / "clip.mp4"), 10, "ffv1")


def test_an_odd_sized_video_loses_its_last_column_and_row_with_a_warning(tmp_path, caplog):
    odd = scene(2, size=(47, 79))
    with caplog.at_level(logging.WARNING), VideoWriter(str(tmp_path / "odd.mkv"), 10, "ffv1") as writer:
        for frame in odd:
            writer.write(frame)
    assert "frames are 79x47, and FFmpeg writes even sizes only, so the video is 78x46" in caplog.text
    np.testing.assert_array_equal(np.stack(decode(tmp_path / "odd.mkv")[0]), np.stack(odd)[:, :46, :78])


def test_a_classifier_is_told_a_video_is_not_an_image_and_an_enhancer_takes_both(tmp_path, caplog):
    images(tmp_path / "mixed", ["a.png"])
    clip = write_video(tmp_path / "mixed" / "clip.mp4", scene(1), 10, "mp4v")
    with pytest.raises(VideoForClassifierError, match=f"{re.escape(str(clip))} is a video, and this model is a "
                                                      "classifier of images; to classify its frames, extract them"):
        list_inputs(str(clip), "classification")
    with caplog.at_level(logging.WARNING):
        assert list_inputs(str(tmp_path / "mixed"), "classification") == [str(tmp_path / "mixed" / "a.png")]
    assert "1 video(s) in" in caplog.text and "left out (clip.mp4): a classifier classifies images" in caplog.text
    assert list_inputs(str(tmp_path / "mixed"), "enhancement") == [str(tmp_path / "mixed" / name)
                                                                   for name in ("a.png", "clip.mp4")]


def test_an_earlier_video_result_is_kept_unless_overwrite_and_names_never_clash(tmp_path):
    inputs = [str(tmp_path / "low" / name) for name in ("clip.mp4", "clip.png")]
    out = tmp_path / "out"
    assert output_paths(inputs, str(out), False) == {inputs[0]: str(out / "clip.mp4"), inputs[1]: str(out / "clip.png")}
    assert output_paths(inputs[:1], str(out), False, "ffv1") == {inputs[0]: str(out / "clip.mkv")}
    (out / "clip.mp4").write_bytes(b"an earlier result")
    with pytest.raises(OutputError, match=f"refusing to replace results of an earlier run \\({re.escape(str(out))}"):
        output_paths(inputs[:1], str(out), False)
    assert output_paths(inputs[:1], str(out), True) == {inputs[0]: str(out / "clip.mp4")}
    with pytest.raises(OutputError, match="clip.avi, clip.mp4 would all be written as"):
        output_paths([str(tmp_path / "low" / "clip.avi"), str(tmp_path / "low" / "clip.mp4")], str(out), True)


def test_progress_without_a_known_total_counts_without_an_eta():
    progress = Progress(None, unit="frame")
    progress.update(3)
    assert re.fullmatch(r"3 done, [\d.]+ frame/s elapsed 0:00:00", progress.line())
