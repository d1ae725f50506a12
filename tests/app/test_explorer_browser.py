"""The explorer in a real browser: headless Chromium driven by Playwright, against ``camscope serve``.

One server (the real command, ``python -m camscope serve --port 0`` with a data folder, a bank of
it built with the default model, the default model and a ResNet-18 of random weights) and one
browser (a session fixture of tests/conftest.py) are shared by the module. The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or
``CAMSCOPE_CHROMIUM``); without it or without Playwright for Python, every test here is skipped with
the reason. Screenshots go to ``$CAMSCOPE_ARTIFACTS`` (default ``build/test-artifacts/``).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import camscope
from camscope.models import data_config, imagenet_classes, load_image, load_model, sample_image

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CAMSCOPE_ARTIFACTS", ROOT / "build" / "test-artifacts"))
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    data = tmp_path_factory.mktemp("explorer-data")
    for folder, name in [("cats", "chelsea"), ("cats", "astronaut"), ("cups", "coffee"), ("cups", "rocket")]:
        (data / folder).mkdir(exist_ok=True)
        Image.fromarray(sample_image(name)).resize((128, 96)).save(data / folder / f"{name}.png")
    return data


@pytest.fixture(scope="module")
def bank(data_folder, model):
    """A bank of the data folder (classes cats 0, cups 1) built with the default model, as ``bank build`` does."""
    from camscope.data.folders import ImageFolderData
    from camscope.passes.batches import ImageTransform

    folder = ImageFolderData(data_folder, transform=ImageTransform(224, data_config("efficientnet_lite0")))
    built = camscope.ReferenceBank.build(model, folder, model_name="efficientnet_lite0", progress=False)
    built.save(data_folder.parent / "explorer.bank")
    return built


@pytest.fixture(scope="module")
def server(chromium_executable, data_folder, bank, start_serve):
    models = ["--model", "efficientnet_lite0", "--model", "torchvision:resnet18=none"]
    return start_serve(
        "--data", str(data_folder), "--bank", str(data_folder.parent / "explorer.bank"), *models
    ).split()[2]


@pytest.fixture(scope="module")
def browser_page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture
def page(browser_page, server):
    """The shared page, loaded afresh: every test starts from the page as a new visitor sees it (any order)."""
    browser_page.set_viewport_size({"width": 1400, "height": 1000})
    browser_page.goto(server)
    browser_page.wait_for_selector("#photo-chelsea img")
    browser_page.wait_for_function("() => document.getElementById('layer').options.length > 0")
    return browser_page


@pytest.fixture(scope="module")
def model():
    return load_model()


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"explorer-{name}.png"
    path.write_bytes(page.screenshot(full_page=True))  # (with path=, the driver writes through a thread it keeps)
    return path


def _settled(page) -> None:
    """Wait until no job is running and the panels' images are loaded."""
    page.wait_for_function("() => document.body.dataset.busy === '0'")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.panel img.map')].every((img) => img.complete && img.naturalWidth > 0)"
    )


def _chelsea(page) -> None:
    """Pick chelsea and wait for its top-5 and Grad-CAM."""
    page.click("#photo-chelsea")
    page.wait_for_selector("#predictions li:nth-child(5)")
    page.wait_for_selector('.panel[data-key="gradcam"] img.map')
    _settled(page)


def _panel_job(page) -> str:
    return page.eval_on_selector("#panels", "element => element.dataset.job")


def _title(page, key: str) -> str:
    return page.inner_text(f'.panel[data-key="{key}"] h3')


def test_pick_chelsea_shows_the_top5_and_a_grad_cam(page, model):
    page.click("#photo-chelsea")
    page.wait_for_selector("#predictions li:nth-child(5)")
    _settled(page)
    page.wait_for_selector('.panel[data-key="gradcam"] img.map')
    items = page.locator("#predictions li").all_inner_texts()
    x, _ = load_image(sample_image("chelsea"), config=data_config("efficientnet_lite0"))
    with torch.no_grad():
        top = model(x).softmax(dim=1)[0].topk(5)
    names = imagenet_classes()
    assert len(items) == 5
    for item, p, c in zip(items, top.values, top.indices):
        assert item.endswith(names[int(c)]) and item.startswith(f"{float(p) * 100:.1f}%")
    assert "tiger cat" in page.inner_text('.panel[data-key="gradcam"] h3')
    _shot(page, "chelsea-gradcam")


def test_finer_cam_follows_gamma_and_its_download_equals_camscope_explain(page, model, server):
    import httpx

    _chelsea(page)
    page.check("#method-finer-gradcam")
    _settled(page)
    page.wait_for_selector('.panel[data-key="finer-gradcam"]')
    page.locator("#gamma").fill("1.2")
    page.wait_for_function(
        "() => (document.querySelector('.panel[data-key=\"finer-gradcam\"] .caption') || {}).textContent?.includes('gamma 1.2')"
    )
    _settled(page)
    assert page.locator(".panel").count() == 2
    with page.expect_download() as event:
        page.click('.panel[data-key="finer-gradcam"] a.download-npy')
    downloaded = np.load(io.BytesIO(Path(event.value.path()).read_bytes()), allow_pickle=False)
    settings = httpx.get(f"{server}api/download/{_panel_job(page)}/settings.json", timeout=30).json()["settings"]
    predictions = page.locator("#predictions li").evaluate_all(
        "items => items.map((item) => Number(item.dataset.class))"
    )
    assert settings["gamma"] == 1.2 and settings["target"] == predictions[0] and settings["versus"] == predictions[1:4]
    x, _ = load_image(sample_image("chelsea"), config=data_config("efficientnet_lite0"))
    expected = camscope.explain(
        model, x, method="finer-gradcam", target=predictions[0], references=predictions[1:4], gamma=1.2
    )
    np.testing.assert_allclose(downloaded, expected.maps[0].numpy(), atol=1e-5)
    _shot(page, "chelsea-finer-gamma")


def test_clicking_a_class_explains_it(page):
    _chelsea(page)
    second = page.locator("#predictions li").nth(1)
    name = second.inner_text().split("%", 1)[1].strip()
    second.click()
    page.wait_for_function(
        f"() => (document.querySelector('.panel[data-key=\"gradcam\"] h3') || {{}}).textContent?.includes({name!r})"
    )
    _settled(page)
    assert "explained" in (second.get_attribute("class") or "")


def test_a_text_file_named_png_shows_an_error_in_the_page(page):
    page.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image\n"}])
    error = page.locator("#upload-error")
    error.wait_for(state="visible")
    assert "not an image" in error.inner_text()
    _shot(page, "bad-upload")


def test_an_image_of_the_data_folder_and_diffcam_against_one_of_its_classes(page):
    page.select_option("#data-image", "data:cups/coffee.png")
    page.wait_for_function("() => document.getElementById('input-caption').textContent === 'cups/coffee.png'")
    page.wait_for_function("() => document.querySelector('#predictions li')?.textContent.includes('espresso')")
    page.check("#method-diffcam")
    assert page.input_value("#diffcam-source") == "bank"  # the --bank is preselected
    page.select_option("#diffcam-source", "data")
    page.select_option("#diffcam-group", "class")
    assert page.locator("#diffcam-class option").all_inner_texts() == ["cats", "cups"]
    page.select_option("#diffcam-class", "cats")
    page.wait_for_function(
        "() => (document.querySelector('.panel[data-key=\"diffcam\"] .caption') || {}).textContent?.includes('class:cats (data folder)')"
    )
    _settled(page)
    _shot(page, "data-folder-diffcam")


def test_a_slow_method_shows_progress_and_can_be_cancelled(page, server):
    import httpx

    page.set_input_files("#upload", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image\n"}])
    page.locator("#upload-error").wait_for(state="visible")
    _chelsea(page)
    page.uncheck("#method-gradcam")
    page.check("#method-scorecam")
    page.wait_for_function("() => document.getElementById('status-text').textContent.includes('masked passes')")
    job = page.eval_on_selector("#status", "element => element.dataset.job")
    _shot(page, "scorecam-progress")
    page.click("#cancel")
    deadline = time.monotonic() + 60
    while (state := httpx.get(f"{server}api/jobs/{job}", timeout=30).json())["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["status"] == "cancelled" and state["progress"]["done"] < state["progress"]["total"]
    page.uncheck("#method-scorecam")
    page.check("#method-gradcam")
    page.check("#method-finer-gradcam")
    page.select_option("#diffcam-source", "photos")
    page.check("#method-diffcam")
    page.click("#photo-chelsea")  # clears the upload's error message
    page.wait_for_selector('.panel[data-key="diffcam"] img.map')
    _settled(page)
    assert page.locator("#upload-error").is_hidden()
    assert [p.get_attribute("data-key") for p in page.locator(".panel").all()] == [
        "gradcam",
        "finer-gradcam",
        "diffcam",
    ]
    _shot(page, "overview")


def test_diffcam_with_the_bank_names_the_bank_class_and_keeps_it_when_a_class_is_clicked(page, model, bank):
    _chelsea(page)
    page.check("#method-diffcam")
    page.select_option("#diffcam-source", "bank")
    page.select_option("#diffcam-group", "others")
    page.wait_for_function(
        "() => (document.querySelector('.panel[data-key=\"diffcam\"] .caption') || {}).textContent?.includes('(bank)')"
    )
    _settled(page)
    x, _ = load_image(sample_image("chelsea"), config=data_config("efficientnet_lite0"))
    expected = camscope.explain(model, x, method="diffcam", bank=bank, reference="others")
    label = int(expected.classes[0])
    title = _title(page, "diffcam")
    # the bank's label is named from the bank (cats, cups), never as the model's class of that number (tench, goldfish)
    assert title == f"DiffCAM: bank class {bank.class_name(label)}", title
    assert imagenet_classes()[label] not in title and "%" not in title
    before = page.eval_on_selector('.panel[data-key="diffcam"] img.map', "img => img.src")
    page.locator("#predictions li").nth(2).click()  # another class: Grad-CAM follows it, DiffCAM's map does not
    name = page.locator("#predictions li").nth(2).inner_text().split("%", 1)[1].strip()
    page.wait_for_function(
        f"() => (document.querySelector('.panel[data-key=\"gradcam\"] h3') || {{}}).textContent?.includes({name!r})"
    )
    _settled(page)
    assert _title(page, "diffcam") == title
    assert page.eval_on_selector('.panel[data-key="diffcam"] img.map', "img => img.src") != before  # a new job
    _shot(page, "bank-diffcam")


def test_an_error_marks_the_maps_stale_and_another_models_bank_says_which_model(page):
    _chelsea(page)
    page.check("#method-diffcam")  # against the bank, preselected
    page.wait_for_selector('.panel[data-key="diffcam"] img.map')
    _settled(page)
    assert page.locator("#stale-note").is_hidden()
    page.select_option("#model", "torchvision:resnet18")
    error = page.locator("#error")
    error.wait_for(state="visible")
    _settled(page)
    text = error.inner_text()
    assert "built with efficientnet_lite0" in text and "unknown layer" not in text, text
    assert "stale" in (page.get_attribute("#panels", "class") or "")
    assert page.locator("#stale-note").is_visible() and "earlier settings" in page.inner_text("#stale-note")
    _shot(page, "stale-after-error")
    page.select_option("#model", "efficientnet_lite0")
    page.wait_for_function("() => document.getElementById('error').hidden")
    _settled(page)
    page.wait_for_function("() => !document.getElementById('panels').classList.contains('stale')")
    assert page.locator("#stale-note").is_hidden()


def test_the_page_says_what_each_comparison_shows_and_fits_a_narrow_window(page):
    _chelsea(page)
    for about, words in [("#about-finer", "Finer-CAM keeps what tells"), ("#about-diffcam", "DiffCAM shows what sets")]:
        assert page.locator(about).is_visible() and words in page.inner_text(about)
    assert "An S-CAM puts the map on one signed scale" in page.text_content("#about-scam")
    page.set_viewport_size({"width": 420, "height": 900})
    try:
        page.wait_for_function("() => window.innerWidth === 420")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, overflow
        box = page.locator(".panel").first.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 420
        _shot(page, "narrow")
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


@pytest.fixture(scope="module")
def scene_server(chromium_executable, tmp_path_factory, start_serve):
    """A second explorer, on the shipped scene detector, with two test scenes as its data folder."""
    from camscope.data.small_models import scene_data
    from camscope.viz.figures import save_image

    folder = tmp_path_factory.mktemp("scene-data")
    scenes = scene_data("scenes-detector", "test", limit=2)
    for i in range(2):
        save_image(folder / f"scene{i}.png", scenes.images[i].permute(1, 2, 0).numpy())
    url = start_serve("--model", "camscope:scenes-detector", "--data", str(folder)).split()[2]
    return url, folder, scenes


@pytest.fixture
def scene_page(browser, scene_server):
    """The scene explorer's page, loaded afresh in its own browser context."""
    url, folder, scenes = scene_server
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_function("() => document.getElementById('layer').options.length > 0")
    yield page, folder, scenes
    context.close()


def test_a_detector_shows_its_boxes_and_a_click_explains_one(scene_page):
    from camscope.models.scene_zoo import load_scene_model

    page, folder, scenes = scene_page
    page.select_option("#data-image", "data:scene1.png")
    count = int((scenes.labels[1] > 0).sum())
    page.wait_for_function(f"() => document.querySelectorAll('#boxes rect').length >= {count}")
    assert page.inner_text("#predictions-heading").startswith("Boxes")
    _settled(page)
    second = page.locator("#predictions li").nth(1)
    name = second.get_attribute("data-name")
    page.click("#box-1")
    page.wait_for_function(
        f"() => (document.querySelector('.panel[data-key=\"gradcam\"] h3') || {{}}).textContent?.includes({name!r})"
    )
    _settled(page)
    assert "explained" in (page.get_attribute("#box-1", "class") or "")
    assert "explained" in (second.get_attribute("class") or "")
    with page.expect_download() as event:
        page.click('.panel[data-key="gradcam"] a.download-npy')
    downloaded = np.load(io.BytesIO(Path(event.value.path()).read_bytes()), allow_pickle=False)
    detector = load_scene_model("scenes-detector")
    x, _ = load_image(folder / "scene1.png", size=96, config=data_config("camscope:scenes-detector"))
    box = [float(page.get_attribute("#box-1", key)) for key in ("x", "y", "width", "height")]
    label = int(second.get_attribute("data-class"))
    with torch.no_grad():
        found = detector(x)[0]
    index = int((found["boxes"][:, 0] - box[0]).abs().argmin())  # the frame's offsets are 0 for a square scene
    expected = camscope.explain(
        detector, x, target=camscope.BoxTarget([label], found["boxes"][index : index + 1], score="score")
    )
    np.testing.assert_allclose(downloaded, expected.maps[0].numpy(), atol=1e-4)
    _shot(page, "scene-detector-boxes")
