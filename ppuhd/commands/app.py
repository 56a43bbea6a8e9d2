"""Serve a web page that runs exported models on your images (Gradio, on this machine only).

    ppuhd app --model-dir output/uhdfour_demo/export --model-dir output/vit_demo/export
    ppuhd app -c uhdfour_demo --weights output/uhdfour_demo/checkpoints/best
    ppuhd app --model-dir DIR --port 7861 --max-pixels 8294400

Open the printed address (http://127.0.0.1:7860 by default) in a browser. Enhance: upload a
low-light image or click a demo image, run the model (tiled as its export says, with a
progress bar), compare before and after with a slider, download the full-resolution PNG.
Classify: the top-5 classes of an image. Models: load another export folder, or a config and
its weights. Stop with Ctrl+C. Needs Gradio: pip install 'ppuhd[app]' (or pip install gradio).
The page calls nothing outside this machine: no analytics, no share link, fonts served locally.
"""

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile

from .. import runtime
from ..deploy.app import (
    DEFAULT_MAX_PIXELS,
    DISPLAY_SIDE,
    ModelCatalog,
    classify_upload,
    enhance_upload,
    for_display,
    megapixels,
    write_demo_images,
)
from ..engine.runtime import setup_runtime
from ..errors import UserError
from .common import exit_on_user_error, run_main

MAX_FILE_SIZE = "1gb"  # Gradio refuses larger uploads itself; an 8K 16-bit PNG is about 200 MB
# Read by Gradio and huggingface_hub when they are imported: no usage reports, and no request to the
# Hugging Face Hub (huggingface_hub otherwise fetches a list from it for the headers of gradio_client).
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class MissingPackageError(UserError, ImportError):
    """A package an optional feature needs is not installed."""


def import_gradio():
    try:
        import gradio
    except ImportError:
        raise MissingPackageError("the web app needs Gradio, which is not installed: pip install 'ppuhd[app]' "
                                  "(or pip install gradio)") from None
    return gradio


def build_page(catalog, demos, result_dir, max_pixels=DEFAULT_MAX_PIXELS):
    """The app's ``gradio.Blocks``: the functions of :mod:`ppuhd.deploy.app` behind three tabs.

    Events are named for the API (``/enhance``, ``/classify``, ``/load_model``) and run one at
    a time; bad input is shown in the page as its one-line message (``gradio.Error``).
    """
    gr = import_gradio()

    @contextlib.contextmanager
    def shown_in_page():
        try:
            yield
        except UserError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def upload_path(upload):
        if not upload:
            raise gr.Error("choose an image first: upload one, or click a demo image", print_exception=False)
        return upload["path"]

    def enhance(upload, model_name, progress=gr.Progress()):
        path = upload_path(upload)
        with shown_in_page():
            model = catalog.get(model_name, "enhancement")
            result = enhance_upload(model, path, result_dir, max_pixels,
                                    lambda done, total: progress((done, total), desc="enhancing", unit="tiles"))
        height, width = result.after.shape[:2]
        shown = " (shown smaller; the download is full size)" if max(height, width) > DISPLAY_SIDE else ""
        info = f"{width}x{height} (WxH) enhanced in {result.seconds:.2f} s{shown}"
        return (for_display(result.before), for_display(result.after)), result.png_path, info

    def classify(upload, model_name):
        path = upload_path(upload)
        with shown_in_page():
            ranked = classify_upload(catalog.get(model_name, "classification"), path, max_pixels)
        return dict(ranked)

    def listing():
        rows = [f"| {name} | {model.describe()} |" for name, model in catalog.models.items()]
        return "\n".join(["| Model | What it is |", "| --- | --- |", *rows]) if rows else "No model loaded yet."

    def model_choices(task, chosen=None, **props):
        names = catalog.names(task)
        return gr.Dropdown(choices=names, value=chosen if chosen in names else (names[0] if names else None),
                           **props)

    def current_models():  # what a page opened now shows: models loaded since the page was built too
        return listing(), model_choices("enhancement"), model_choices("classification")

    def load_model(export_dir, config, weights):
        export_dir, config, weights = (text.strip() for text in (export_dir, config, weights))
        with shown_in_page():
            if export_dir:
                model = catalog.add_export(export_dir)
            elif config and weights:
                model = catalog.add_config(config, weights)
            else:
                raise gr.Error("give an export folder, or a config and its weights", print_exception=False)
        return listing(), model_choices("enhancement", model.name), model_choices("classification", model.name)

    one_at_a_time = dict(concurrency_limit=1, concurrency_id="model")  # two models at once would share the cores
    with gr.Blocks(title="ppuhd", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(f"# ppuhd\nRun exported models on your images, on this machine. Images of up to "
                    f"{megapixels(max_pixels)}; grayscale is repeated to three channels, an alpha channel is "
                    "dropped, 16-bit images keep their precision for enhancement models.")
        with gr.Tab("Enhance"):
            with gr.Row():
                with gr.Column():
                    enhancer = model_choices("enhancement", label="Enhancement model", elem_id="enhance-model")
                    low_light = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Low-light image",
                                         height=360, elem_id="enhance-input")
                    gr.Examples(demos["enhancement"], inputs=low_light, label="Demo images")
                    enhance_button = gr.Button("Enhance", variant="primary", elem_id="enhance-button")
                with gr.Column():
                    slider = gr.ImageSlider(label="Before / after (drag the handle)", format="png",
                                            elem_id="enhance-slider")
                    download = gr.File(label="Enhanced image (full-resolution PNG)", elem_id="enhance-download")
                    info = gr.Markdown(elem_id="enhance-info")
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column():
                    classifier = model_choices("classification", label="Classification model",
                                               elem_id="classify-model")
                    photo = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", height=360,
                                     elem_id="classify-input")
                    gr.Examples(demos["classification"], inputs=photo, label="Demo images")
                    classify_button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                top5 = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="classify-labels")
        with gr.Tab("Models"):
            models = gr.Markdown(listing())
            export_dir = gr.Textbox(label="Export folder (written by ppuhd export)")
            config = gr.Textbox(label="or a config (YAML file or shipped name)")
            weights = gr.Textbox(label="and its weights (checkpoint folder or weights file)")
            load_button = gr.Button("Load")
        # preprocess=False: the upload reaches ppuhd as the file it is, read and checked as ppuhd infer does
        enhance_button.click(enhance, [low_light, enhancer], [slider, download, info], api_name="enhance",
                             preprocess=False, **one_at_a_time)
        classify_button.click(classify, [photo, classifier], top5, api_name="classify", preprocess=False,
                              **one_at_a_time)
        load_button.click(load_model, [export_dir, config, weights], [models, enhancer, classifier],
                          api_name="load_model", **one_at_a_time)
        page.load(current_models, None, [models, enhancer, classifier], api_visibility="undocumented")
    return page


class ServeError(UserError, OSError):
    """The page cannot be served at the address asked for."""


def launch(page, host, port, work_dir):
    """Start serving ``page`` at ``host:port`` in a background thread; returns its address."""
    try:
        _, url, _ = page.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, show_error=True, quiet=True,
            share=False, ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,  # all stays here
            allowed_paths=[work_dir], max_file_size=MAX_FILE_SIZE,
        )
    except OSError as err:
        raise ServeError(f"cannot serve the page on {host}:{port} ({err.strerror or 'the port is taken'}); "
                         "choose another --port") from None
    return url


def add_arguments(parser):
    parser.add_argument("--model-dir", action="append", default=[], metavar="EXPORT_DIR",
                        help="folder written by ppuhd export (repeatable)")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="a config (YAML file or shipped name) to export with the --weights of the same "
                             "position (repeatable)")
    parser.add_argument("--weights", action="append", default=[], help="checkpoint folder or weights file")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: this machine only; 0.0.0.0 serves your network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest image accepted, in pixels (default {DEFAULT_MAX_PIXELS}: 8K UHD)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")


def run(args):
    for name, value in OFFLINE_ENVIRONMENT.items():  # this process is the app's: set before Gradio is imported
        os.environ.setdefault(name, value)
    with exit_on_user_error():
        import_gradio()  # before anything else is done
    if len(args.config) != len(args.weights):
        sys.exit(f"error: give one --weights for each -c/--config, in the same order "
                 f"({len(args.config)} config(s), {len(args.weights)} weights)")
    runtime.configure(num_threads=args.threads)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio checks its own address through httpx
    setup_runtime(device="cpu")  # exports made from a config trace on the CPU, as ppuhd export does
    work_dir = tempfile.mkdtemp(prefix="ppuhd-app-")  # exports, demo images, results; removed at the end
    try:
        with exit_on_user_error():
            catalog = ModelCatalog(os.path.join(work_dir, "models"), args.device, args.threads)
            for model_dir in args.model_dir:
                catalog.add_export(model_dir)
            for config, weights in zip(args.config, args.weights):
                catalog.add_config(config, weights)
            demos = write_demo_images(os.path.join(work_dir, "demo"))
            page = build_page(catalog, demos, os.path.join(work_dir, "results"), args.max_pixels)
            url = launch(page, args.host, args.port, work_dir)
        print(f"ppuhd app: open {url} in a browser ({len(catalog.models)} model(s) loaded; Ctrl+C stops)",
              flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain kill also removes the work folder
        page.block_thread()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main(argv=None):
    return run_main(sys.modules[__name__], argv)
