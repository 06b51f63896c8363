"""The playground in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven by Selenium against ``archlab serve`` on 127.0.0.1.

It types a prompt and sees the text stream in, draws a digit with pointer events and
sees the CNN's and the CapsNet's probabilities, submits a bad SMILES and sees the
error, and saves a screenshot (in the test's folder, and in $ARCHLAB_ARTIFACTS when
set: `ARCHLAB_ARTIFACTS=docs/img` refreshes the README's picture).  Without a browser
on the machine it skips, saying so.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--window-size=1400,1400", "--force-device-scale-factor=1",
)  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "no headless browser here: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(serve_run):
    from archlab.serve import create_app

    names = ("gpt", "translation", "cnn", "capsnet", "esol", "gan")
    app = create_app([f"{n}={serve_run(n)}" for n in names])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)
    app.state.close()


def wait_for(condition, seconds: float = 30, what: str = "the page"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_playground_streams_classifies_refuses_and_is_pictured(browser, server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    panel = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "section.generate"), what="the panels"
    )[0]

    # text generation: the text streams in after the prompt
    prompt = panel.find_element(By.CSS_SELECTOR, ".prompt")
    prompt.clear()
    prompt.send_keys("ROMEO:")
    panel.find_element(By.CSS_SELECTOR, ".max-new-tokens").clear()
    panel.find_element(By.CSS_SELECTOR, ".max-new-tokens").send_keys("120")
    panel.find_element(By.CSS_SELECTOR, ".go").click()
    output = panel.find_element(By.CSS_SELECTOR, ".output")
    wait_for(lambda: panel.get_attribute("data-done") == "1", what="the generation to end")
    text = output.text
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:") + 50

    # digits: draw a 7 with pointer events; both image runs show ten probabilities
    digits = browser.find_element(By.CSS_SELECTOR, "section.digits")
    canvas = digits.find_element(By.CSS_SELECTOR, "canvas.pad")
    (
        ActionChains(browser)
        .move_to_element_with_offset(canvas, -50, -60)
        .click_and_hold()
        .move_by_offset(50, 0)
        .move_by_offset(50, 0)
        .move_by_offset(-30, 60)
        .move_by_offset(-30, 60)
        .release()
        .perform()
    )
    for run in ("cnn", "capsnet"):
        column = f'.bars-column[data-run="{run}"] .bar'
        bars = wait_for(
            lambda c=column: browser.find_elements(By.CSS_SELECTOR, c), what=f"{run}'s bars"
        )
        assert len(bars) == 10
        shares = [float(b.find_element(By.CSS_SELECTOR, ".p").text.rstrip("%")) for b in bars]
        assert all(0 <= share <= 100 for share in shares)
        if run == "cnn":  # a softmax; the CapsNet's bars are capsule lengths
            assert sum(shares) == pytest.approx(100, abs=1.0)
    assert not digits.find_element(By.CSS_SELECTOR, ".error").text

    # molecules: a good SMILES draws, a bad one is an error in the page
    molecule = browser.find_element(By.CSS_SELECTOR, "section.molecule")
    molecule.find_element(By.CSS_SELECTOR, ".go").click()
    wait_for(lambda: molecule.find_elements(By.CSS_SELECTOR, ".drawing svg"), what="the drawing")
    smiles = molecule.find_element(By.CSS_SELECTOR, ".smiles")
    smiles.clear()
    smiles.send_keys("C1CC((")
    molecule.find_element(By.CSS_SELECTOR, ".go").click()
    error = wait_for(
        lambda: molecule.find_element(By.CSS_SELECTOR, ".error").text, what="the SMILES error"
    )
    assert "RDKit cannot parse this SMILES" in error

    # translation with its heatmap, and a GAN grid, for the picture
    translate = browser.find_element(By.CSS_SELECTOR, "section.translate")
    translate.find_element(By.CSS_SELECTOR, ".go").click()
    wait_for(lambda: translate.find_elements(By.CSS_SELECTOR, ".heatmap td"), what="the heatmap")
    sample = browser.find_element(By.CSS_SELECTOR, "section.sample")
    sample.find_element(By.CSS_SELECTOR, ".go").click()
    wait_for(
        lambda: browser.execute_script(
            "const i = document.querySelector('section.sample img.grid');"
            "return i.complete && i.naturalWidth > 0;"
        ),
        what="the sample grid",
    )

    shot = tmp_path / "playground.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("ARCHLAB_ARTIFACTS"):
        folder = Path(os.environ["ARCHLAB_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / "playground.png")
