"""The explorer on the shipped detector and segmenter (FastAPI's TestClient): boxes to click, the clicked box's map."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed: pip install 'camscope[app]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient

import camscope
from camscope.app.images import ImageStore
from camscope.app.server import create_app
from camscope.app.workbench import Workbench
from camscope.data.small_models import scene_data
from camscope.models import data_config, load_photo
from camscope.models.scene_zoo import load_scene_model
from camscope.viz.figures import save_image


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("scenes")
    batch = scene_data("scenes-detector", "test", limit=2)
    for i in range(2):
        save_image(folder / f"scene{i}.png", batch.images[i].permute(1, 2, 0).numpy())
    return folder, batch


@pytest.fixture(scope="module")
def client(scenes):
    workbench = Workbench(
        {
            "camscope:scenes-detector": "camscope:scenes-detector",
            "camscope:scenes-segmenter": "camscope:scenes-segmenter",
        },
        images=ImageStore(scenes[0]),
    )  # the explorer's size (224) is not theirs: the scene models keep their own 96
    app = create_app(workbench)
    with TestClient(app) as test_client:
        yield test_client
    app.state.queue.close()


def _explain(client, **settings):
    body = {"image": "data:scene0.png", "model": "camscope:scenes-detector", "methods": ["layercam"], **settings}
    response = client.post("/api/explain", json=body)
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    deadline = time.monotonic() + 120
    while (state := client.get(f"/api/jobs/{job}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return state


def test_a_detector_offers_its_boxes_and_explains_the_clicked_one(client, scenes):
    found = client.post("/api/predict", json={"image": "data:scene0.png", "model": "camscope:scenes-detector"}).json()
    assert found["task"] == "detect" and found["predictions"] == [] and found["frame"]["width"] == 96
    objects = found["objects"]
    labels = sorted(int(v) for v in scenes[1].labels[0] if v > 0)
    assert sorted(o["class"] for o in objects if o["score"] >= 0.5) == labels
    clicked = objects[1]
    state = _explain(client, target=clicked["class"], box=clicked["box"])
    assert state["status"] == "done", state
    panel = state["result"]["panels"][0]
    assert clicked["name"] in panel["title"] and f"score {clicked['score']:.2f}" in panel["title"]
    response = client.get(f"/api/download/{state['id']}/layercam/map.npy")
    downloaded = torch.from_numpy(np.load(io.BytesIO(response.content), allow_pickle=False))
    detector = load_scene_model("scenes-detector")
    x, _ = load_photo(scenes[0] / "scene0.png", size=96, config=data_config("camscope:scenes-detector"))
    expected = camscope.explain(
        detector,
        x,
        method="layercam",
        layer="features",
        target=camscope.BoxTarget([clicked["class"]], [clicked["box"]], score="score"),
    )
    torch.testing.assert_close(downloaded, expected.maps[0], atol=1e-5, rtol=0)


def test_a_segmenter_offers_its_regions(client):
    found = client.post("/api/predict", json={"image": "data:scene1.png", "model": "camscope:scenes-segmenter"}).json()
    assert found["task"] == "segment" and found["objects"]
    state = _explain(
        client, model="camscope:scenes-segmenter", methods=["gradcam"], target=found["objects"][0]["class"]
    )
    assert state["status"] == "done" and "region of" in state["result"]["panels"][0]["caption"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"target": 1, "box": [0, 0, 5, 5]}, "is not a detection"),
        ({"target": 1}, "click one of the boxes"),
        ({"methods": ["finer-gradcam"], "target": 1, "box": [0, 0, 50, 50]}, "compare classes of a classifier"),
        ({"target": 1, "box": [5, 5, 1, 1]}, "x1 > x0"),
    ],
)
def test_bad_box_requests_say_why(client, settings, message):
    response = client.post(
        "/api/explain",
        json={"image": "data:scene0.png", "model": "camscope:scenes-detector", "methods": ["gradcam"], **settings},
    )
    if response.status_code == 400:
        assert message in response.json()["error"]
        return
    job = response.json()["job"]
    deadline = time.monotonic() + 60
    while (state := client.get(f"/api/jobs/{job}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state["status"] == "failed" and message in state["error"]
