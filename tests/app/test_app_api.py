"""The explorer's JSON API (FastAPI's TestClient) on a tiny seeded model: numbers equal camscope.explain's."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed: pip install 'camscope[app]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient

import camscope
from camscope.app.images import ImageStore
from camscope.app.jobs import JobQueue
from camscope.app.schema import ExplainRequest
from camscope.app.server import create_app
from camscope.app.workbench import Workbench
from camscope.data.folders import ImageFolderData
from camscope.engine.capture import candidate_layers, default_layer
from camscope.models import data_config, load_image, load_photo, sample_image
from camscope.passes.batches import ImageTransform
from camscope.viz import overlay
from conftest import TinyStridedCNN

SIZE = 32


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A data folder (two class sub-folders, a link out of it) and a secret file outside it."""
    root = tmp_path_factory.mktemp("explorer")
    data, outside = root / "data", root / "outside"
    rng = np.random.default_rng(0)
    for index, cls in enumerate(["a", "a", "b", "b", "b"]):
        (data / cls).mkdir(parents=True, exist_ok=True)
        (data / cls / f"{index}.png").write_bytes(_png(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)))
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(_png(np.zeros((20, 20, 3), dtype=np.uint8)))
    (data / "a" / "link.png").symlink_to(secret)
    (data / "escape").symlink_to(outside, target_is_directory=True)
    return data, secret


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyStridedCNN(classes=6).eval()


@pytest.fixture(scope="module")
def client(folders, model, one_thread):
    workbench = Workbench({"tiny": model}, images=ImageStore(folders[0], max_upload_bytes=200_000), size=SIZE)
    app = create_app(workbench)
    with TestClient(app) as test_client:
        yield test_client
    app.state.queue.close()


def _inputs(model, name="chelsea"):
    x, _ = load_image(sample_image(name), size=SIZE, config=data_config(model))
    return x


def _finish(client, job_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job_id}").json()
        if state["status"] not in ("queued", "running"):
            return state
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def _explain(client, **settings):
    body = {"image": "photo:chelsea", "model": "tiny", "methods": ["gradcam"], **settings}
    response = client.post("/api/explain", json=body)
    assert response.status_code == 200, response.text
    return _finish(client, response.json()["job"])


def _npy(client, job, key, file="map.npy"):
    response = client.get(f"/api/download/{job}/{key}/{file}")
    assert response.status_code == 200, response.text
    return torch.from_numpy(np.load(io.BytesIO(response.content), allow_pickle=False))


def test_the_page_and_its_assets_are_served_from_the_package_without_a_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        urls = [part for part in text.replace('"', " ").split() if part.startswith(("http://", "https://"))]
        assert urls in ([], ["http://www.w3.org/2000/svg;"], ["http://www.w3.org/2000/svg"]), urls


def test_models_methods_and_layers_are_those_of_camscope_layers(client, model):
    info = client.get("/api/models").json()
    assert info["models"][0]["name"] == "tiny" and "finer-gradcam" in info["methods"] and info["data"]
    layers = client.get("/api/layers", params={"model": "tiny"}).json()
    x = torch.zeros(1, 3, SIZE, SIZE)
    assert layers["default"] == default_layer(model, x)
    assert [(entry["name"], tuple(entry["shape"])) for entry in layers["layers"]] == candidate_layers(
        model, x, all_layers=False
    )
    assert client.get("/api/layers", params={"model": "nope"}).status_code == 400


def test_top5_are_the_softmax_of_the_model(client, model):
    result = client.post("/api/predict", json={"image": "photo:chelsea", "model": "tiny"}).json()
    with torch.no_grad():
        probabilities = model(_inputs(model)).softmax(dim=1)[0]
    top = probabilities.topk(5)
    assert [p["class"] for p in result["predictions"]] == top.indices.tolist()
    np.testing.assert_allclose([p["probability"] for p in result["predictions"]], top.values.numpy(), rtol=1e-5)


def test_downloads_equal_camscope_explain_on_the_same_settings(client, model):
    x = _inputs(model)
    state = _explain(client, methods=["gradcam", "finer-gradcam"], target=2, versus=[4, 0], gamma=0.35)
    assert state["status"] == "done", state
    job = state["id"]
    expected = camscope.explain(model, x, method="gradcam", target=2)
    torch.testing.assert_close(_npy(client, job, "gradcam"), expected.maps[0])
    torch.testing.assert_close(_npy(client, job, "gradcam", "raw.npy"), expected.raw[0])
    finer = camscope.explain(model, x, method="finer-gradcam", target=2, references=[4, 0], gamma=0.35)
    torch.testing.assert_close(_npy(client, job, "finer-gradcam"), finer.maps[0])
    panels = {p["key"]: p for p in state["result"]["panels"]}
    assert [r["class"] for r in panels["finer-gradcam"]["references"]] == [4, 0]
    top = expected.contributions[0].abs().argsort(descending=True)[:3].tolist()
    assert [c["channel"] for c in panels["gradcam"]["contributions"][:3]] == top
    tensors, header = _load_safetensors(client.get(f"/api/download/{job}/finer-gradcam/maps.safetensors").content)
    torch.testing.assert_close(tensors["maps"], finer.maps[0])
    assert header["kind"] == "maps" and header["settings"]["gamma"] == 0.35 and header["settings"]["versus"] == [4, 0]
    settings = client.get(f"/api/download/{job}/settings.json").json()
    assert settings["settings"]["target"] == 2 and settings["explained"]["class"] == 2
    png = client.get(f"/api/download/{job}/gradcam/overlay.png")
    assert png.headers["content-type"] == "image/png"
    # the map over the whole photo, in the place of the model's crop
    photo = load_photo(sample_image("chelsea"), size=SIZE, config=data_config(model))[1]
    drawn = np.asarray(Image.open(io.BytesIO(png.content)), dtype=np.float64) / 255
    np.testing.assert_allclose(drawn, overlay(photo, expected.maps[0]), atol=0.5 / 255 + 1e-6)


def _load_safetensors(data: bytes):
    """The tensors and camscope's header of a safetensors file (the header is read as the format defines it)."""
    from safetensors.torch import load

    size = int.from_bytes(data[:8], "little")
    return load(data), json.loads(json.loads(data[8 : 8 + size])["__metadata__"]["camscope"])


def test_diffcam_against_the_other_photos_and_a_bank_of_the_data_folder(client, model, folders, tmp_path):
    state = _explain(client, methods=["diffcam"], source="photos")
    assert state["status"] == "done", state
    names = ["astronaut", "coffee", "rocket", "motorcycle", "grace_hopper"]
    reference = torch.cat([_inputs(model, name) for name in names])
    expected = camscope.explain(model, _inputs(model), method="diffcam", reference=reference)
    torch.testing.assert_close(_npy(client, state["id"], "diffcam"), expected.maps[0])

    state = _explain(client, methods=["diffcam"], source="data", reference="class:a")
    assert state["status"] == "done", state
    clean = tmp_path / "clean"  # the data folder without its links out
    for path in folders[0].glob("*/[0-9].png"):
        (clean / path.parent.name).mkdir(parents=True, exist_ok=True)
        (clean / path.parent.name / path.name).write_bytes(path.read_bytes())
    dataset = ImageFolderData(clean, transform=ImageTransform(SIZE, data_config(model)), size=SIZE)
    bank = camscope.ReferenceBank.build(model, dataset, size=SIZE, progress=False)
    assert bank.count == 5 and list(bank.class_names) == ["a", "b"]
    expected = camscope.explain(model, _inputs(model), method="diffcam", bank=bank, reference="class:a")
    torch.testing.assert_close(_npy(client, state["id"], "diffcam"), expected.maps[0])


def test_a_failed_job_says_why(client):
    state = _explain(client, layer="no.such.layer")
    assert state["status"] == "failed" and "no.such.layer" in state["error"]
    bad = client.post("/api/explain", json={"image": "photo:chelsea", "model": "tiny", "methods": ["nope"]})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]
    assert client.get("/api/jobs/unknown").status_code == 400


def test_only_files_inside_the_data_folder_are_read(client):
    listing = client.get("/api/photos").json()
    assert "chelsea" in listing["photos"]
    assert sorted(listing["data"]) == ["a/0.png", "a/1.png", "b/2.png", "b/3.png", "b/4.png"]
    ok = client.get("/api/image", params={"ref": "data:b/3.png"})
    assert ok.status_code == 200
    for ref in ["data:../outside/secret.png", "data:/etc/passwd", "data:a/link.png", "data:escape/secret.png",
                "data:a/../../outside/secret.png", "data:a/./0.png/..", "data:"]:  # fmt: skip
        response = client.get("/api/image", params={"ref": ref})
        assert response.status_code == 400, ref
        assert "refused" in response.json()["error"] or "no such" in response.json()["error"], ref
        refused = client.post("/api/predict", json={"image": ref, "model": "tiny"})
        assert refused.status_code == 400, ref


def test_a_bad_upload_gets_a_clear_error_and_a_good_one_is_explained(client, model):
    text = client.post("/api/upload", files={"file": ("notes.png", b"just some text\n", "image/png")})
    assert text.status_code == 400 and "not an image" in text.json()["error"]
    big = client.post("/api/upload", files={"file": ("big.png", b"\0" * 300_000, "image/png")})
    assert big.status_code == 413 and "limit" in big.json()["error"]  # refused before its body is read
    just_over = client.post("/api/upload", files={"file": ("over.png", b"\0" * 200_001, "image/png")})
    assert just_over.status_code == 400 and "limit" in just_over.json()["error"]
    truncated = client.post(
        "/api/upload", files={"file": ("cut.png", _png(sample_image("coffee"))[:2000], "image/png")}
    )
    assert truncated.status_code == 400 and truncated.json()["error"]
    buffer = io.BytesIO()
    Image.fromarray(sample_image("chelsea")).save(buffer, format="JPEG", quality=90)
    stored = client.post("/api/upload", files={"file": ("cat.jpg", buffer.getvalue(), "image/jpeg")}).json()
    state = _explain(client, image=stored["image"], target=1)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    x, _ = load_image(decoded, size=SIZE, config=data_config(model))
    expected = camscope.explain(model, x, method="gradcam", target=1)
    torch.testing.assert_close(_npy(client, state["id"], "gradcam"), expected.maps[0])


def test_concurrent_requests_are_serialised_and_each_gets_its_own_maps(client, model):
    targets = [0, 1, 2, 3, 4, 5]
    results: dict[int, torch.Tensor] = {}

    def request(target: int) -> None:
        job = client.post(
            "/api/explain", json={"image": "photo:chelsea", "model": "tiny", "methods": ["gradcampp"], "target": target}
        ).json()["job"]
        _finish(client, job)
        results[target] = _npy(client, job, "gradcampp")

    threads = [threading.Thread(target=request, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    x = _inputs(model)
    for target in targets:
        torch.testing.assert_close(
            results[target], camscope.explain(model, x, method="gradcampp", target=target).maps[0]
        )


def test_the_queue_runs_one_job_at_a_time_in_submission_order():
    queue = JobQueue()
    running, seen, order = [0], [], []
    lock = threading.Lock()

    def work(job, index):
        with lock:
            running[0] += 1
            seen.append(running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
            order.append(index)
        return index

    jobs = [queue.submit("work", lambda job, i=i: work(job, i)) for i in range(12)]
    assert [queue.wait(job, 30).result for job in jobs] == list(range(12))
    assert max(seen) == 1 and order == list(range(12))
    queue.close()


def test_cancel_stops_a_score_cam_job_between_chunks_and_leaves_the_model_clean(model):
    queue = JobQueue()
    x = _inputs(model)

    def score_cam(job):
        queue.cancel(job.id)  # cancelled while running: it stops at the first chunk
        return camscope.explain(model, x, method="scorecam", batch_size=1)

    job = queue.wait(queue.submit("explain", score_cam), 60)
    assert job.status == "cancelled" and job.progress["done"] == 1 and job.progress["total"] > 2
    assert not any(m._forward_hooks for m in model.modules())
    after = queue.wait(queue.submit("explain", lambda job: camscope.explain(model, x, method="scorecam")), 60)
    assert after.status == "done"
    torch.testing.assert_close(after.result.maps, camscope.explain(model, x, method="scorecam").maps)
    queue.close()


def test_a_queued_job_that_is_cancelled_never_starts(client):
    queue = client.app.state.queue
    release = threading.Event()
    blocker = queue.submit("block", lambda job: release.wait(30))
    job = client.post("/api/explain", json={"image": "photo:chelsea", "model": "tiny", "methods": ["gradcam"]}).json()
    assert client.get(f"/api/jobs/{job['job']}").json()["status"] == "queued"
    assert client.delete(f"/api/jobs/{job['job']}").status_code == 200
    release.set()
    queue.wait(blocker, 30)
    state = _finish(client, job["job"])
    assert state["status"] == "cancelled" and state["progress"] == {}
    assert client.get(f"/api/download/{job['job']}/gradcam/map.npy").status_code == 400


def test_an_s_cam_panel_uses_the_analysis_scale_and_lists_principal_features(folders, model):
    data = [
        (torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 0, 1, 2]))
    ]
    analysis = camscope.analyze(model, data, method="gradcam", progress=False)
    workbench = Workbench({"tiny": model}, analysis=analysis, size=SIZE)
    app = create_app(workbench)
    with TestClient(app) as client:
        state = _explain(client, methods=[], scaled=True, target=1, principal=0.25)
        assert state["status"] == "done", state
        (panel,) = state["result"]["panels"]
        assert panel["key"] == "fs-cam" and panel["signed"]
        features = analysis.principal_features(0.25, cls=[1])
        expected = camscope.explain(
            model, _inputs(model), method="gradcam", target=1, scale=analysis, features=features
        )
        torch.testing.assert_close(_npy(client, state["id"], "fs-cam"), expected.maps[0])
        column = analysis.importance[:, 1]
        assert panel["principal_features"][0]["feature"] == int(column.argmax())
        assert panel["principal_features"][0]["share"] == pytest.approx(float(column.max() / column.clamp(min=0).sum()))
    app.state.queue.close()


def test_a_preloaded_bank_gives_diffcam_its_groups(folders, model, tmp_path):
    dataset = ImageFolderData(folders[0] / "b", transform=ImageTransform(SIZE, data_config(model)), size=SIZE)
    labelled = [(x, torch.tensor([i % 3])) for i, (x, _) in enumerate(dataset.batches(1))]
    bank = camscope.ReferenceBank.build(model, labelled * 2, progress=False)
    workbench = Workbench({"tiny": model}, bank=bank, size=SIZE)
    app = create_app(workbench)
    with TestClient(app) as client:
        info = client.get("/api/models").json()["bank"]
        assert info["samples"] == 6 and info["layer"] == bank.layer and len(info["classes"]) == 3
        state = _explain(client, methods=["diffcam"], source="bank", reference="knn:1")
        assert state["status"] == "done", state
        expected = camscope.explain(model, _inputs(model), method="diffcam", bank=bank, reference="knn:1")
        torch.testing.assert_close(_npy(client, state["id"], "diffcam"), expected.maps[0])
        assert state["result"]["panels"][0]["caption"] == "vs knn:1 (bank)"
    app.state.queue.close()


def test_a_model_with_random_weights_is_offered_with_a_note_and_its_layers():
    workbench = Workbench({"torchvision:resnet18": "torchvision:resnet18"}, weights={"torchvision:resnet18": None})
    app = create_app(workbench)
    with TestClient(app) as client:
        (entry,) = client.get("/api/models").json()["models"]
        assert entry["weights"] == "random" and "not a trained model" in entry["note"]
        layers = client.get("/api/layers", params={"model": "torchvision:resnet18"}).json()
        assert layers["default"] == "layer4" and "layer4" in [layer["name"] for layer in layers["layers"]]
    app.state.queue.close()


def test_closing_the_queue_with_cancel_stops_the_running_job():
    queue = JobQueue()
    started = threading.Event()

    def long(job):
        started.set()
        while True:
            job.check()
            time.sleep(0.01)

    job = queue.submit("long", long)
    waiting = queue.submit("next", lambda job: 1)
    assert started.wait(30)
    queue.close(cancel=True)
    assert job.status == "cancelled" and waiting.status == "cancelled"


def test_diffcam_names_bank_classes_from_the_bank_and_a_bank_answers_only_its_model(folders, model):
    dataset = ImageFolderData(folders[0] / "b", transform=ImageTransform(SIZE, data_config(model)), size=SIZE)
    labelled = [(x, torch.tensor([1 + i % 2])) for i, (x, _) in enumerate(dataset.batches(1))]
    bank = camscope.ReferenceBank.build(
        model, labelled * 2, progress=False, model_name="tiny", class_names=["owls", "cats", "cups"]
    )
    workbench = Workbench({"tiny": model}, bank=bank, size=SIZE)
    app = create_app(workbench)
    with TestClient(app) as client:
        state = _explain(client, methods=["gradcam", "diffcam"], source="bank", reference="others", target=4)
        assert state["status"] == "done", state
        expected = camscope.explain(model, _inputs(model), method="diffcam", bank=bank, reference="others")
        label = int(expected.classes[0])
        gradcam, diffcam = state["result"]["panels"]
        # bank label 1 or 2 is named from the bank, not as the model's "class 1", and has no model probability
        assert diffcam["title"] == f"DiffCAM: bank class {bank.class_name(label)}" and "%" not in diffcam["title"]
        assert gradcam["title"].startswith("Grad-CAM: class 4 ")
        # clicking another class changes Grad-CAM's title, not DiffCAM's (its map does not depend on it)
        again = _explain(client, methods=["diffcam"], source="bank", reference="others", target=5)
        assert again["result"]["panels"][0]["title"] == diffcam["title"]
        photos = _explain(client, methods=["diffcam"], source="photos", target=5)
        assert photos["result"]["panels"][0]["title"] == "DiffCAM: this image against its reference group"
    app.state.queue.close()
    # a model named otherwise than the bank's cannot use its statistics: said before any layer is looked up
    named = Workbench({"torchvision:resnet18": "torchvision:resnet18"}, bank=bank, size=SIZE)
    request = ExplainRequest.from_json(
        {"image": "photo:chelsea", "model": "torchvision:resnet18", "methods": ["diffcam"], "source": "bank"}
    )
    with pytest.raises(camscope.CamscopeError, match=r"built with tiny \(layer .*\), not torchvision:resnet18"):
        named._diffcam_options(request, named.models["torchvision:resnet18"], torch.zeros(1))


def test_the_explorer_checks_its_device():
    with pytest.raises(camscope.CamscopeError, match="device='tpu' is not a device"):
        Workbench({"tiny": TinyStridedCNN()}, device="tpu")
