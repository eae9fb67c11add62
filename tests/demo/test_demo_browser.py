"""The web demo in a real headless browser: scripts/demo.py serves the embedded models on a free
localhost port, Debian's Chromium (driven by playwright) types a prompt, runs a few steps and finds the
views, the orbit video, the 3D viewer and the downloads on the page.

Needs `apt-get install chromium` (or VIDEOMV_CHROMIUM=/path/to/chromium) and `pip install playwright`;
skipped without them. VIDEOMV_DEMO_SCREENSHOT=path also saves the page as a small PNG there, and
VIDEOMV_DEMO_STEPS sets the denoising steps of the run (default 4).
"""

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("VIDEOMV_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STEPS = int(os.environ.get("VIDEOMV_DEMO_STEPS", "4"))

pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the browser test needs playwright (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip(f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium, or set VIDEOMV_CHROMIUM)",
                allow_module_level=True)

pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """scripts/demo.py on its default models (the embedded text and image models); yields its URL."""
    port, out = free_port(), tmp_path_factory.mktemp("demo_generations")
    log = tmp_path_factory.mktemp("demo_log") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "scripts" / "demo.py"), "--port", str(port), "--threads", "1", "--out", str(out)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"scripts/demo.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"scripts/demo.py did not serve {url} within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture()
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server, wait_until="load")
        page.wait_for_selector("#prompt textarea", timeout=30_000)
        yield page
        browser.close()


def test_prompt_to_views_video_and_3d_viewer(page, tmp_path):
    # An empty prompt is a message on the page, not a traceback.
    page.click("#generate-text")
    page.wait_for_selector("text=Prompt: it is empty", timeout=15_000)
    assert "Traceback" not in page.content()

    page.fill("#prompt textarea", "a red cube on top of a blue cylinder")
    steps = page.locator("#steps-text input[type=number]")
    steps.fill(str(STEPS))
    steps.press("Enter")
    # Remember whether the denoising loop's progress was shown while sampling.
    page.evaluate("""() => {
        window.sawProgress = false;
        new MutationObserver(() => {
            if (/denoising - [0-9.]+%/.test(document.body.innerText)) window.sawProgress = true;
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#generate-text")
    page.wait_for_function("document.querySelectorAll('#views img').length >= 24", timeout=60_000 + 2_000 * STEPS)

    status = page.inner_text("#status")
    assert "24 views sampled in" in status and f"{STEPS} steps" in status and "3D-aware at steps" in status
    assert page.evaluate("window.sawProgress"), "the denoising progress never appeared on the page"

    # The orbit video loads and decodes.
    page.wait_for_function("(() => { const v = document.querySelector('#video video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; })()", timeout=15_000)
    # The 3D viewer draws something: its canvas is not one flat colour.
    canvas = page.locator("#viewer canvas")
    canvas.wait_for(timeout=15_000)
    page.wait_for_timeout(1500)
    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 100 and pixels.std() > 5.0, "the 3D viewer's canvas is blank"

    downloads = page.inner_text("#downloads")
    for name in ("orbit", "grid", "views", "gaussians", "cameras", "settings"):
        assert name in downloads

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("VIDEOMV_DEMO_SCREENSHOT")
    if target:  # a small palette PNG for the README
        image = Image.open(shot).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def test_image_tab_shows_a_non_square_image_as_a_message(page, tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (90, 40), (200, 30, 30)).save(wide)
    page.get_by_role("tab", name="Image to 3D").click()
    page.set_input_files("#image input[type=file]", str(wide))
    page.wait_for_selector("#image img", timeout=15_000)
    page.click("#generate-image")
    page.wait_for_selector("text=is 90x40; expected a square", timeout=15_000)
    assert page.locator("#views img").count() == 0
