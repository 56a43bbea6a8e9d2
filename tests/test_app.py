"""ppuhd app: the page's API through gradio_client, and the page itself in a real browser (Chromium)."""

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import zlib

import cv2
import numpy as np
import pytest
import yaml

from ppuhd.commands import app as app_command
from ppuhd.data.demo import SHAPE_CLASSES, draw_shape_image
from ppuhd.data.image_io import read_image
from ppuhd.deploy import Predictor, top_k
from ppuhd.deploy.app import (ModelCatalog, UploadError, check_upload, enhance_upload, for_display,
                              write_demo_images)
from ppuhd.engine.tiling import tiled_forward, tiling_arguments
from ppuhd.metrics.image_quality import quantize
from test_infer import REPO, TINY_UHDFOUR, export

TILING = {"tile_size": [32, 32], "stride": [16, 16]}  # a 40x56 image is 2x3 tiles
TINY_CLASSIFIER = {"type": "VisionTransformer", "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1,
                   "num_heads": 2, "num_classes": len(SHAPE_CLASSES)}
MAX_PIXELS = 100 * 100  # the test app's limit
ARTIFACTS = os.path.join(REPO, "test-artifacts")  # git-ignored; CI keeps the browser's screenshot here


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny tiled enhancer and a tiny 16x16 classifier of the demo shapes (class names from DemoShapes)."""
    enhancer = tmp_path_factory.mktemp("enhancer")
    classifier = tmp_path_factory.mktemp("classifier")
    shapes = {"type": "DemoShapes", "split": "val", "root": str(classifier / "shapes"), "image_size": 16,
              "train_per_class": 1, "val_per_class": 1, "transforms": [{"type": "Normalize"}, {"type": "ToCHW"}]}
    return {"enhancer": export(enhancer, TINY_UHDFOUR, sections={"tiling": TILING}, dynamic_size=True,
                               input_size=(32, 32)),
            "enhancer_weights": str(enhancer / "weights.pdparams"),
            "classifier": export(classifier, TINY_CLASSIFIER, sections={"val_dataset": shapes})}


class ConnectionLog:
    """Every address this process looks up or connects a socket to, while recording."""

    def __init__(self, monkeypatch):
        self.hosts = set()
        connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

        def logged_connect(sock, address):
            if isinstance(address, tuple):
                self.hosts.add(address[0])
            return connect(sock, address)

        def logged_getaddrinfo(host, *args, **kwargs):
            self.hosts.add(host.decode() if isinstance(host, bytes) else host)
            return getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", logged_connect)
        monkeypatch.setattr(socket, "getaddrinfo", logged_getaddrinfo)

    def off_machine(self):
        def local(host):
            try:
                return ipaddress.ip_address(host).is_loopback
            except ValueError:
                return host == "localhost"
        return sorted(host for host in self.hosts if host is not None and not local(host))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(exports, tmp_path_factory):
    """The app's page, built and launched in this process as ``ppuhd app`` does, and a client of it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in app_command.OFFLINE_ENVIRONMENT.items():  # read when Gradio is first imported
            monkeypatch.setenv(name, value)
        connections = ConnectionLog(monkeypatch)  # from before Gradio is imported
        from gradio_client import Client
        work = tmp_path_factory.mktemp("app")
        catalog = ModelCatalog(str(work / "models"), device="cpu")
        enhancer, classifier = catalog.add_export(exports["enhancer"]), catalog.add_export(exports["classifier"])
        page = app_command.build_page(catalog, write_demo_images(str(work / "demo")), str(work / "results"),
                                      MAX_PIXELS)
        url = app_command.launch(page, "127.0.0.1", free_port(), str(work))
        client = Client(url, verbose=False, analytics_enabled=False, download_files=str(work / "downloads"))
        yield {"client": client, "enhancer": enhancer, "classifier": classifier, "connections": connections,
               "url": url, "work": work}
        page.close()


def low_light(path, size=(40, 56), channels=3, dtype=np.uint8, seed=0):
    """A dark random image written with OpenCV (so 16-bit and alpha survive as they are)."""
    top = 80 if dtype == np.uint8 else 20000
    shape = (*size, channels) if channels > 1 else size
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, top, shape).astype(dtype))
    return str(path)


def predictor_output(predictor, path, tiled=True):
    """What ppuhd's Predictor gives for ``path``: tiled as the export says, or the full frame."""
    image = predictor.preprocess(path)
    if tiled:
        tiling = tiling_arguments(predictor.deploy["tiling"], predictor.deploy["input_multiple"])
        enhanced = tiled_forward(predictor.predict, image, **tiling)
    else:
        enhanced = predictor.predict(image[None])[0]
    return quantize(enhanced.transpose(1, 2, 0))


def upload_of(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_the_api_enhances_an_upload_as_the_predictor_does(served, exports, tmp_path):
    upload = low_light(tmp_path / "dark.png")
    (before, after), download, info = served["client"].predict(upload_of(upload), served["enhancer"].name,
                                                               api_name="/enhance")
    assert os.path.basename(download) == "dark_enhanced.png"
    enhanced = read_rgb(download)
    assert enhanced.shape == (40, 56, 3) and info.startswith("56x40 (WxH) enhanced in")
    assert np.abs(enhanced.astype(int) - read_rgb(upload)).mean() > 1  # not the input handed back
    predictor = served["enhancer"].predictor
    np.testing.assert_array_equal(enhanced, predictor_output(predictor, upload))
    assert not np.array_equal(enhanced, predictor_output(predictor, upload, tiled=False))  # the tiles were used
    np.testing.assert_array_equal(read_rgb(before), read_rgb(upload))  # the slider: the upload, then the result
    np.testing.assert_array_equal(read_rgb(after), enhanced)


@pytest.mark.parametrize("kind", ["grayscale 16-bit", "RGBA"])
def test_grayscale_alpha_and_16_bit_uploads_are_read_as_ppuhd_reads_them(served, exports, tmp_path, kind):
    if kind == "RGBA":
        upload = low_light(tmp_path / "with_alpha.png", channels=4)
    else:
        upload = low_light(tmp_path / "gray16.png", channels=1, dtype=np.uint16)
    assert cv2.imread(upload, cv2.IMREAD_UNCHANGED).shape[2:] == ((4,) if kind == "RGBA" else ())
    (before, _), download, _ = served["client"].predict(upload_of(upload), served["enhancer"].name,
                                                        api_name="/enhance")
    np.testing.assert_array_equal(read_rgb(download), predictor_output(served["enhancer"].predictor, upload))
    np.testing.assert_array_equal(read_rgb(before), read_image(upload, "uint8"))


def test_the_classifier_gives_the_top_5_classes_by_name(served, exports, tmp_path):
    upload = str(tmp_path / "star.png")
    cv2.imwrite(upload, draw_shape_image(SHAPE_CLASSES.index("star"), 16, np.random.default_rng(1)))
    result = served["client"].predict(upload_of(upload), served["classifier"].name, api_name="/classify")
    predictor = served["classifier"].predictor
    assert predictor.deploy["class_names"] == sorted(SHAPE_CLASSES)  # DemoShapes' folders, as ImageFolder sorts them
    expected = top_k(predictor.predict(predictor.preprocess(upload)[None])[0], 5, predictor.deploy["class_names"])
    got = [(c["label"], c["confidence"]) for c in result["confidences"]]
    assert [name for name, _ in got] == [name for name, _ in expected] and result["label"] == expected[0][0]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in expected], rtol=1e-5)


def test_bad_uploads_and_choices_get_a_one_line_message_in_the_page(served, tmp_path, capfd):
    from gradio_client.exceptions import AppError

    client, enhancer, classifier = served["client"], served["enhancer"].name, served["classifier"].name
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    big = low_light(tmp_path / "big.png", size=(100, 120))
    off_size = low_light(tmp_path / "wide.png", size=(16, 24))
    cases = [
        ((text, enhancer, "/enhance"), "notes.png is not an image this app can read (PNG, JPEG, TIFF"),
        ((big, enhancer, "/enhance"), "big.png is 120x100 (12000 pixels), more than this app's limit of 10000 "
                                      "pixels; shrink it, or start the app with a larger --max-pixels"),
        ((off_size, classifier, "/classify"), "wide.png: the model was exported for 16x16 (WxH) inputs, and the "
                                              "exported preprocessing gives 24x16"),
        ((big, classifier, "/enhance"), f"{classifier} is a classification model, not an enhancement model"),
        ((big, None, "/classify"), "choose a classification model first; classification models: "),
    ]
    for (upload, model, endpoint), message in cases:
        with pytest.raises(AppError) as error:
            client.predict(upload_of(upload), model, api_name=endpoint)
        assert message in str(error.value)
    assert "Traceback" not in "".join(capfd.readouterr())  # nor in the server's log


def test_a_model_loaded_in_the_page_from_a_config_and_weights_runs(served, exports, tmp_path):
    from gradio_client.exceptions import AppError

    config = tmp_path / "tiny_uhdfour.yml"
    config.write_text(yaml.safe_dump({"model": TINY_UHDFOUR, "export": {"dynamic_size": True, "input_size": [32, 32]}}))
    client = served["client"]
    with pytest.raises(AppError, match=f"export folder {tmp_path / 'nothing'} does not exist: give the folder ppuhd "
                                       "export wrote"):
        client.predict(str(tmp_path / "nothing"), "", "", api_name="/load_model")
    listing, enhancers, _ = client.predict("", str(config), exports["enhancer_weights"], api_name="/load_model")
    name = f"UHDFour: {config} + {exports['enhancer_weights']}"
    assert f"| {name} | UHDFour, enhancement, any input size; full frames, untiled;" in listing
    assert enhancers["value"] == name  # and chosen in the Enhance tab
    upload = low_light(tmp_path / "dark.png")
    _, download, _ = client.predict(upload_of(upload), name, api_name="/enhance")
    # the same weights as the tiled export, without its tiling: the predictor's full-frame output
    full_frame = predictor_output(served["enhancer"].predictor, upload, tiled=False)
    np.testing.assert_array_equal(read_rgb(download), full_frame)


def test_the_app_and_its_client_connect_to_nothing_but_this_machine(served, tmp_path):
    served["client"].predict(upload_of(low_light(tmp_path / "a.png")), served["enhancer"].name, api_name="/enhance")
    assert "127.0.0.1" in served["connections"].hosts  # the log works: it saw the client's own connections
    assert served["connections"].off_machine() == []


def test_enhancement_reports_progress_tile_by_tile(served, tmp_path):
    calls = []
    enhance_upload(served["enhancer"], low_light(tmp_path / "dark.png"), str(tmp_path),
                   on_progress=lambda *done: calls.append(done))
    assert calls == [(n, 6) for n in range(1, 7)]


def png_header_only(path, width, height):
    """A PNG claiming ``width`` x ``height`` pixels, with no pixel data: decoding it would fail."""
    png = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[24:29]  # 8-bit RGB
    path.write_bytes(png[:12] + header + zlib.crc32(header).to_bytes(4, "big") + png[-12:])  # + IEND
    return str(path)


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    with pytest.raises(UploadError, match=r"^wide.png is 7000x5000 \(35.0 megapixels\), more than this app's "
                                          r"limit of 33.2 megapixels; shrink it, or start the app with a larger "
                                          r"--max-pixels$"):
        check_upload(png_header_only(tmp_path / "wide.png", 7000, 5000))
    with pytest.raises(UploadError, match=r"^huge.png has more pixels than this app accepts \(33.2 megapixels\)$"):
        check_upload(png_header_only(tmp_path / "huge.png", 100000, 100000))  # beyond Pillow's own bomb limit
    assert check_upload(png_header_only(tmp_path / "ok.png", 7680, 4320)) == (7680, 4320)


def test_the_page_shows_large_images_smaller_and_small_ones_as_they_are():
    wide = np.random.default_rng(0).integers(0, 255, (1000, 3000, 3), dtype=np.uint8)
    assert for_display(wide).shape == (683, 2048, 3)
    np.testing.assert_array_equal(for_display(wide[:100, :2048]), wide[:100, :2048])


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(SystemExit, match=r"^error: the web app needs Gradio, which is not installed: pip install "
                                         r"'ppuhd\[app\]' \(or pip install gradio\)$"):
        app_command.main(["--model-dir", "unused"])


def test_configs_and_weights_must_come_in_pairs():
    with pytest.raises(SystemExit, match=r"^error: give one --weights for each -c/--config, in the same order "
                                         r"\(2 config\(s\), 1 weights\)$"):
        app_command.main(["-c", "uhdfour_demo", "-c", "vit_demo", "--weights", "best"])


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        page = app_command.build_page(ModelCatalog(str(tmp_path)), {"enhancement": [], "classification": []},
                                      str(tmp_path))
        with pytest.raises(app_command.ServeError, match=f"cannot serve the page on 127.0.0.1:{port} "):
            app_command.launch(page, "127.0.0.1", port, str(tmp_path))


# The page in a real browser: Debian's chromium and chromium-driver (.ci/run installs them)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser():
    """A headless Chromium driven by Selenium, logging the page's network requests."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        reason = (f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and chromium-driver "
                  "(apt-get install -y chromium chromium-driver; .ci/run installs them)")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000",
                 # the browser's own calls home, unrelated to the page
                 "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # a driver path: no Selenium Manager


@contextlib.contextmanager
def app_process(*args):
    """``python tools/app.py ARGS`` on a free port until the block ends; yields the page's address."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "tools/app.py", *args, "--port", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"ppuhd app: open http://127.0.0.1:{port}/ in a browser"), line + process.stdout.read()
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        returncode = process.wait(timeout=30)
    assert returncode == 0, process.stdout.read()  # stopped cleanly, its work folder removed


@pytest.mark.slow
def test_the_page_enhances_an_uploaded_image_in_a_browser(exports, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    upload = low_light(tmp_path / "dark.png", size=(48, 64))
    driver = browser()
    try:
        with app_process("--model-dir", exports["enhancer"], "--model-dir", exports["classifier"]) as url:
            driver.get(url)
            wait = WebDriverWait(driver, 60)
            wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "#enhance-input input[type=file]")))
            driver.find_element(By.CSS_SELECTOR, "#enhance-input input[type=file]").send_keys(upload)
            wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "#enhance-input img")))
            driver.find_element(By.ID, "enhance-button").click()
            link = wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "#enhance-download a[href]")))
            with urllib.request.urlopen(link.get_attribute("href"), timeout=30) as response:
                enhanced = cv2.imdecode(np.frombuffer(response.read(), np.uint8), cv2.IMREAD_COLOR)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#enhance-slider img")) == 2)
            screenshot = tmp_path / "app.png"
            driver.save_screenshot(str(screenshot))
            os.makedirs(ARTIFACTS, exist_ok=True)
            shutil.copy(screenshot, os.path.join(ARTIFACTS, "app.png"))
            not_an_image = tmp_path / "notes.png"
            not_an_image.write_text("not an image")
            driver.find_element(By.CSS_SELECTOR, "#enhance-input button[aria-label='Remove Image']").click()
            driver.find_element(By.CSS_SELECTOR, "#enhance-input input[type=file]").send_keys(str(not_an_image))
            driver.find_element(By.ID, "enhance-button").click()
            toast = wait.until(shown.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid='toast-body']")))
            message = toast.text
            requests = {json.loads(entry["message"])["message"]["params"]["request"]["url"]
                        for entry in driver.get_log("performance")
                        if json.loads(entry["message"])["message"]["method"] == "Network.requestWillBeSent"}
    finally:
        driver.quit()
    assert "notes.png is not an image this app can read" in message and "Traceback" not in message
    assert enhanced.shape == (48, 64, 3)
    assert np.abs(enhanced.astype(int) - cv2.imread(upload)).mean() > 1
    expected = predictor_output(Predictor(exports["enhancer"], "cpu"), upload)
    np.testing.assert_array_equal(cv2.cvtColor(enhanced, cv2.COLOR_BGR2RGB), expected)
    off_machine = sorted(u for u in requests if not u.startswith((url, "data:", "blob:")))
    assert off_machine == [] and len(requests) > 10  # scripts, styles, fonts: all from the app itself
