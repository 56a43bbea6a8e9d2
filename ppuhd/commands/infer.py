"""Run an exported model on images or videos (Paddle Inference: oneDNN on CPU, GPU if available; or ONNX Runtime).

Classifiers print the top-k classes of images; enhancement models write the enhanced
images as PNGs (8- or 16-bit) and the enhanced videos frame by frame, named after the
inputs. Inputs are never overwritten, nor are earlier results unless --overwrite is given.

    ppuhd infer --model-dir output/vit_demo/export --input photo.jpg --topk 3
    ppuhd infer --model-dir output/uhdfour_demo/export --input low_light/ --output enhanced/
    ppuhd infer --model-dir output/uhdfour_demo/export --input clip.mp4 --output enhanced/ [--video-codec ffv1]
    ppuhd infer --model-dir DIR --input raw_frames/ --bit-depth 16      # 16-bit PNGs
    ppuhd infer --model-dir DIR --input frame_8k.png --tile-size 720 1280 --tile-stride 360 640
    ppuhd infer --model-dir DIR --input folder/ --on-error skip   # leave out unreadable files
    ppuhd infer --model-dir ONNX_EXPORT --input low_light/ --output enhanced/ --backend onnxruntime
    ppuhd infer --model-dir DIR --input photo.jpg --device gpu --precision fp16 --tensorrt   # GPU only
"""

import logging
import os
import sys
import time

import numpy as np

from .. import runtime
from ..data.image_io import IMAGE_EXTENSIONS, InputReadError, convert_depth, write_image
from ..data.video_io import VIDEO_CODECS, VIDEO_EXTENSIONS, VideoReader, VideoWriter, is_video
from ..deploy import BACKENDS, BackendError, create_predictor, top_k
from ..deploy.predictor import PRECISIONS, default_backend, gpu_flags_given
from ..engine.logger import Progress, format_duration
from ..engine.outputs import OutputError, ensure_writable_dir, refuse_to_replace
from ..engine.tiling import tiled_forward, tiling_arguments
from ..errors import UserError
from ..metrics.image_quality import quantize
from .common import exit_on_user_error, run_main

logger = logging.getLogger("infer")
VIDEO_PROGRESS_SECONDS = 10.0  # a video's progress line at most this often (and after its first frame)


class VideoForClassifierError(UserError, ValueError):
    """A video given to a classifier, which classifies images."""


def list_inputs(path, task):
    """The files to run: ``path``, or the images in the folder ``path`` (and videos, for enhancement)."""
    videos = task == "enhancement"
    if os.path.isdir(path):
        names = sorted(f for f in os.listdir(path) if not f.startswith("."))
        extensions = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
        files = [os.path.join(path, f) for f in names if f.lower().endswith(extensions)]
        left_out = [f for f in names if is_video(f) and not videos]
        if left_out:
            logger.warning("%d video(s) in %s left out (%s): a classifier classifies images; to classify a video's "
                           "frames, extract them first", len(left_out), path, ", ".join(left_out))
        if not files:
            raise OutputError(f"no {'images or videos' if videos else 'images'} ({', '.join(extensions)}) in {path}")
        return files
    if not os.path.isfile(path):
        raise OutputError(f"input not found: {path}")
    if is_video(path) and not videos:
        raise VideoForClassifierError(
            f"{path} is a video, and this model is a classifier of images; to classify its frames, extract them "
            f"first (e.g. ffmpeg -i {path} -vf fps=1 frames/%06d.png) and pass the folder")
    return [path]


def output_paths(files, output_dir, overwrite, video_codec="mp4v"):
    """``{input: output}``, checked before any work: never an input, never two inputs to one file,
    no earlier result replaced unless ``overwrite``. Images become PNGs, videos ``video_codec``'s container."""
    video_extension = VIDEO_CODECS[video_codec][0]
    targets = {path: os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0]
                                  + (video_extension if is_video(path) else ".png"))
               for path in files}
    inputs = {os.path.realpath(p) for p in files}
    if os.path.realpath(output_dir) in {os.path.dirname(p) for p in inputs}:
        raise OutputError(f"--output {output_dir} is the input folder; choose another folder so the "
                          "inputs are kept as they are")
    by_target = {}
    for path, target in targets.items():
        by_target.setdefault(target, []).append(path)
    clashes = {t: p for t, p in by_target.items() if len(p) > 1}
    if clashes:
        target, sources = next(iter(clashes.items()))
        raise OutputError(f"{len(clashes)} output name(s) would be shared by several inputs, e.g. "
                          f"{', '.join(map(os.path.basename, sources))} would all be written as {target}; "
                          "rename them or run them separately")
    if not overwrite:
        refuse_to_replace(sorted(targets.values()), "results of an earlier run",
                          "pass --overwrite to replace them, or choose another --output")
    ensure_writable_dir(output_dir)
    return targets


def left_out(err, path, skip, unreadable):
    """An unreadable input: recorded and logged (skip), or the end of the run, naming it."""
    if not skip:
        raise type(err)(err.path, f"{err.reason} (--on-error skip leaves such files out)") from err
    logger.warning("skipping %s", err)
    unreadable.append(path)


def read_inputs(predictor, paths, skip, unreadable):
    """Preprocessed images of ``paths`` as ``[(path, array)]``; unreadable ones recorded (skip) or fatal."""
    read = []
    for path in paths:
        try:
            read.append((path, predictor.preprocess(path)))
        except InputReadError as err:
            left_out(err, path, skip, unreadable)
    return read


def classify(predictor, files, batch_size, k, skip, unreadable):
    names = predictor.deploy.get("class_names")
    for start in range(0, len(files), batch_size):
        images = read_inputs(predictor, files[start : start + batch_size], skip, unreadable)
        if not images:
            continue
        logits = predictor.predict(np.stack([image for _, image in images]))  # distilled: the averaged head
        for (path, _), row in zip(images, logits):
            ranked = ", ".join(f"{name} {p:.3f}" for name, p in top_k(row, k, names))
            print(f"{path}: {ranked}")


def enhanced(predictor, image, tiling):
    """The model's output (HWC floats) for one preprocessed CHW image, full frame or tiled."""
    if tiling:
        output = tiled_forward(predictor.predict, image, **tiling, log_seconds=30.0)
    else:
        output = predictor.predict(image[None])[0]
    return output.transpose(1, 2, 0)


def enhance_video(predictor, path, target, tiling, codec):
    """Frame by frame, never holding more than one: read, enhance, write 8-bit."""
    with VideoReader(path) as video, VideoWriter(target, video.fps, codec) as writer:
        logger.info("%s: %dx%d, %.3f fps, %s frames", path, video.width, video.height, video.fps,
                    video.frame_count or "an unknown number of")
        progress, last_line = Progress(video.frame_count, unit="frame"), None
        for index, frame in enumerate(video):
            image = predictor.prepare(convert_depth(frame, path, predictor.input_dtype), f"{path} frame {index + 1}")
            writer.write(quantize(enhanced(predictor, image, tiling)))
            progress.update()
            if last_line is None or time.perf_counter() - last_line > VIDEO_PROGRESS_SECONDS:
                logger.info("%s: frames %s", path, progress.line())
                last_line = time.perf_counter()
    return progress


def enhance(predictor, targets, tiling, bit_depth, video_codec, skip, unreadable):
    """One image, or one video frame, at a time."""
    progress = Progress(len(targets), unit="file")
    if bit_depth == 16 and any(map(is_video, targets)):
        logger.warning("--bit-depth 16 applies to images: videos are written with 8 bits per channel")
    for path, target in targets.items():
        try:
            if is_video(path):
                frames = enhance_video(predictor, path, target, tiling, video_codec)
                done = f"{frames.done} frames in {format_duration(frames.last - frames.start)}; "
            else:
                write_image(target, quantize(enhanced(predictor, predictor.preprocess(path), tiling), bit_depth))
                done = ""
        except InputReadError as err:
            left_out(err, path, skip, unreadable)
            progress.update()
            continue
        progress.update()
        logger.info("%s -> %s (%sfiles %s)", path, target, done, progress.line())


def tiling_options(deploy, args):
    """Tiling from the export (the config's ``tiling``), changed by the command line; None: full frames."""
    fixed = deploy.get("tile_size")
    if fixed and (args.full_frame or (args.tile_size and list(args.tile_size) != list(fixed))):
        asked = "--full-frame" if args.full_frame else f"--tile-size {args.tile_size[0]} {args.tile_size[1]}"
        raise BackendError(f"{asked}: this export runs tiles of exactly {fixed[0]} {fixed[1]} (H W); export "
                           "again with --input-size H W for other tiles, or with --dynamic-size for any size")
    if args.full_frame:
        return None
    options = dict(deploy.get("tiling") or {})
    if args.tile_size:
        options["tile_size"] = args.tile_size
    if args.tile_stride:
        options["stride"] = args.tile_stride
    return tiling_arguments(options or None, deploy.get("input_multiple", 1))


def add_arguments(parser):
    parser.add_argument("--model-dir", required=True, help="folder written by ppuhd export (tools/export.py)")
    parser.add_argument("--input", required=True,
                        help="an image or a folder of images; for enhancement also a video, or a folder with videos")
    parser.add_argument("--output", default="infer_output", help="enhancement: folder for the enhanced images/videos")
    parser.add_argument("--bit-depth", type=int, choices=[8, 16], default=8,
                        help="enhancement: bits per channel of the PNGs written (videos are always 8-bit)")
    parser.add_argument("--video-codec", choices=sorted(VIDEO_CODECS), default="mp4v",
                        help="enhancement: mp4v writes .mp4 (lossy, plays everywhere), ffv1 writes .mkv (lossless)")
    parser.add_argument("--overwrite", action="store_true", help="enhancement: replace results already in --output")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="an unreadable input stops the run (raise) or is left out and listed at the end (skip)")
    parser.add_argument("--tile-size", type=int, nargs=2, metavar=("H", "W"),
                        help="enhancement: run tiles of this size (default: the config's tiling, if any)")
    parser.add_argument("--tile-stride", type=int, nargs=2, metavar=("H", "W"), help="enhancement: tile step")
    parser.add_argument("--full-frame", action="store_true", help="enhancement: no tiling, whatever the config says")
    parser.add_argument("--topk", type=int, default=5, help="classification: classes to print per image")
    parser.add_argument("--batch-size", type=int, default=8, help="classification: images per batch")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="paddle (Paddle Inference) or onnxruntime (an export made with --format onnx); "
                             "default: the one the export was made for")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--gpu-id", type=int, default=None, help="Paddle Inference on a GPU: the GPU (default 0)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="Paddle Inference on a GPU: compute in fp16 (default fp32)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="Paddle Inference on a GPU: run what TensorRT supports through it, at --precision")


def predictor_options(args, backend):
    """Keyword arguments of ``backend``'s predictor; Paddle Inference's GPU options refused for ONNX Runtime."""
    options = {"device": args.device, "num_threads": args.threads}
    gpu_options = {"gpu_id": args.gpu_id, "tensorrt": args.tensorrt, "precision": args.precision}
    if backend == "paddle":
        return {**options, **gpu_options}
    given = gpu_flags_given(**gpu_options)
    if given:
        raise BackendError(f"{', '.join(given)}: Paddle Inference options; ONNX Runtime takes only --device "
                           "and --threads (or use --backend paddle)")
    return options


def run(args):
    runtime.configure(num_threads=args.threads)
    skip, unreadable = args.on_error == "skip", []
    with exit_on_user_error():
        backend = args.backend or default_backend(args.model_dir)
        predictor = create_predictor(args.model_dir, backend, **predictor_options(args, backend))
        files = list_inputs(args.input, predictor.task)
        if predictor.task == "enhancement":
            tiling = tiling_options(predictor.deploy, args)
            targets = output_paths(files, args.output, args.overwrite, args.video_codec)
            enhance(predictor, targets, tiling, args.bit_depth, args.video_codec, skip, unreadable)
        else:
            classify(predictor, files, args.batch_size, args.topk, skip, unreadable)
    if unreadable:
        logger.warning("%d of %d input(s) could not be read and were left out: %s", len(unreadable), len(files),
                       ", ".join(unreadable))
        sys.exit(1 if len(unreadable) == len(files) else 0)


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
