"""The dataset runner and ``camscope evaluate``: sidecars, targets, reports, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camscope
from camscope.cli.app import main
from camscope.errors import CamscopeError
from camscope.evaluation.sidecars import load_sidecar
from camscope.metrics import deletion, iou, pointing_game
from camscope.models import data_config, load_image


def _folder(root: Path) -> Path:
    """Two classes ("0" and "3"), 40x20 and 24x30 images, sidecars with boxes, masks, parts and labels."""
    rng = np.random.default_rng(0)
    for label, shape in (("0", (20, 40)), ("3", (30, 24))):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = (rng.random((*shape, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img{i}.png")
            h, w = shape
            if i == 0:
                spec = {
                    "boxes": [[w // 2, 0, w, h]],
                    "parts": {"head": [w // 2 + 4, h // 2], "tail": [w // 2 - 4, h // 2], "wing": None},
                    "differing": ["head"],
                }
            elif i == 1:
                mask = np.zeros(shape, dtype=np.uint8)
                mask[: h // 2, : w // 2] = 255
                Image.fromarray(mask).save(folder / f"img{i}_mask.png")
                spec = {"mask": f"img{i}_mask.png", "label": 1}
            else:
                continue  # no sidecar
            (folder / f"img{i}.json").write_text(json.dumps(spec))
    return root


def test_sidecar_geometry_follows_the_preprocessing(tmp_path: Path) -> None:
    image = tmp_path / "wide.png"
    Image.fromarray(np.zeros((20, 40, 3), dtype=np.uint8)).save(image)
    box = [22, 4, 36, 15]
    (tmp_path / "wide.json").write_text(json.dumps({"boxes": [box], "parts": {"p": [25, 10], "gone": [1, 1]}}))
    spec = load_sidecar(image, size=16)
    # Independent check: draw the box into an image and let load_image resize and crop it.
    drawn = np.zeros((20, 40, 3), dtype=np.uint8)
    drawn[box[1] : box[3], box[0] : box[2]] = 255
    expected = torch.from_numpy(load_image(drawn, size=16)[1][..., 0] > 0.5)
    disagree = (spec["region"] != expected).float()
    assert disagree.mean().item() < 0.1  # only boundary pixels may differ (bicubic vs exact)
    assert spec["region"].sum().item() > 0
    x, y = spec["parts"]["p"]
    dot = np.zeros((20, 40, 3), dtype=np.uint8)
    dot[9:12, 24:27] = 255
    peak = np.unravel_index(load_image(dot, size=16)[1][..., 0].argmax(), (16, 16))
    assert abs(peak[0] - y) <= 1.0 and abs(peak[1] - x) <= 1.0
    assert spec["parts"]["gone"] is None  # cropped away
    assert load_sidecar(tmp_path / "missing.png") is None


def test_evaluate_folder_with_sidecars(tmp_path: Path, tiny_cnn: nn.Module) -> None:
    root = _folder(tmp_path / "data")
    report = camscope.evaluate(
        tiny_cnn,
        root,
        methods=["gradcam", "layercam"],
        metrics=["deletion", "iou", "pointing", "parts", "energy_pointing", "auprc"],
        target="label",
        batch_size=4,
        size=16,
        metric_options={"deletion": {"step": 32}},
        out=tmp_path / "out",
    )
    assert len(report.samples) == 6 and report.samples[0].endswith("0/img0.png")
    hits = report.results["gradcam"]["pointing_game"]["hit"]
    assert [math.isnan(v) for v in hits.tolist()] == [False, False, True] * 2
    f1 = report.results["gradcam"]["part_scores"]["f1"]
    assert not math.isnan(f1[0].item()) and math.isnan(f1[1].item())
    # the explained classes: folder "0" -> 0 except the sidecar label 1; folder "3" -> 3 except 1
    explanation = camscope.explain(tiny_cnn, _inputs(root, 16), "gradcam", target=[0, 1, 0, 3, 1, 3])
    direct = deletion(tiny_cnn, _inputs(root, 16), explanation, step=32)
    torch.testing.assert_close(report.results["gradcam"]["deletion"]["auc"], direct["auc"])
    regions = torch.stack([load_sidecar(p, 16)["region"] for p in [root / "0/img0.png", root / "0/img1.png"]])
    torch.testing.assert_close(
        report.results["gradcam"]["iou"]["iou"][:2], iou(explanation.maps[:2], masks=regions)["iou"]
    )
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {
        "summary.csv",
        "per_sample.csv",
        "results.json",
        "curves_deletion.png",
        "curves_iou.png",
    }
    rows = list(csv.DictReader((out / "summary.csv").open()))
    deletion_row = next(
        r for r in rows if r["method"] == "layercam" and r["metric"] == "deletion" and r["value"] == "auc"
    )
    assert float(deletion_row["mean"]) == pytest.approx(
        float(report.results["layercam"]["deletion"]["auc"].mean()), abs=1e-6
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved["format_version"] == 1 and saved["methods"] == ["gradcam", "layercam"]
    assert saved["protocols"]["deletion"]["step"] == 32
    assert len(saved["mean_curves"]["gradcam"]["deletion"]["curve"]["y"]) == 9
    assert len(list(csv.DictReader((out / "per_sample.csv").open()))) == 12


def _inputs(root: Path, size: int) -> torch.Tensor:
    paths = sorted((root / "0").glob("img?.png")) + sorted((root / "3").glob("img?.png"))
    config = data_config(nn.Linear(1, 1))  # what the runner uses for a plain module: the ImageNet defaults
    return torch.cat([load_image(p, size=size, config=config)[0] for p in paths])


def test_evaluate_tensor_data_with_annotations(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    annotations = [{"boxes": [[0, 0, 8, 8]]}, None, {"mask": torch.ones(16, 16, dtype=torch.bool)}]
    report = camscope.evaluate(
        tiny_cnn,
        images,
        methods=["gradcam"],
        metrics=["pointing_game", "sparseness", "entropy", "consistency", "road"],
        annotations=annotations,
        batch_size=2,
        metric_options={"road": {"percentages": (0.5,)}},
    )
    hits = report.results["gradcam"]["pointing_game"]["hit"]
    assert math.isnan(hits[1].item()) and hits[2].item() == 1.0
    assert report.dataset["gradcam"]["consistency"]["n"] == 3
    explanation = camscope.explain(tiny_cnn, images, "gradcam")
    torch.testing.assert_close(
        report.results["gradcam"]["pointing_game"]["hit"][:1],
        pointing_game(explanation.maps[:1], boxes=[[[0, 0, 8, 8]]])["hit"],
    )
    table = report.table()
    assert table.row_count == 7  # pointing hit, gini, entropy, consistency, road combined/morf/lerf


def test_evaluate_sanity_and_limit(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    report = camscope.evaluate(
        tiny_cnn, images, methods=["gradcam"], metrics=["sanity"], limit=2, method_options={"gradcam": {}}
    )
    assert len(report.samples) == 2
    assert report.results["gradcam"]["sanity_check"].curves["spearman"].shape == (2, 3)


def test_evaluate_errors(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    with pytest.raises(CamscopeError, match="unknown metric"):
        camscope.evaluate(tiny_cnn, images, metrics=["faithfulness"])
    with pytest.raises(CamscopeError, match="unknown method"):
        camscope.evaluate(tiny_cnn, images, methods=["nope"])
    with pytest.raises(CamscopeError, match="not evaluated"):
        camscope.evaluate(tiny_cnn, images, metrics=["deletion"], metric_options={"road": {"noise": 0}})
    with pytest.raises(CamscopeError, match="labelled"):
        camscope.evaluate(tiny_cnn, images, metrics=["sparseness"], target="label")


def test_cli_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import camscope.viz.figures as figures

    headings = []
    save_figure = figures.save_figure

    def recording_save(path: Any, figure: Any, **options: Any) -> Path:
        headings.append(figure._suptitle.get_text() if figure._suptitle is not None else "")
        return save_figure(path, figure, **options)

    monkeypatch.setattr(figures, "save_figure", recording_save)
    root = _folder(tmp_path / "data")
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--data",
            str(root),
            "--weights",
            "none",
            "--size",
            "32",
            "--limit",
            "4",
            "--methods",
            "gradcam,gradcampp",
            "--metrics",
            "deletion,rd",
            "--metrics",
            "iou",
            "--metric-option",
            "deletion.step=256",
            "--metric-option",
            "rd.fractions=0.1,0.2",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "relative_drop rd@0.2" in printed and "gradcampp" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["metrics"] == ["deletion", "relative_drop", "iou"] and len(saved["samples"]) == 4
    assert saved["protocols"]["relative_drop"]["fractions"] == [0.1, 0.2]
    assert (out / "curves_relative_drop.png").is_file()
    # every curve plot names the model, says its weights are random, and counts the images
    assert len(headings) == len(list(out.glob("curves_*.png"))) and all(
        h.replace("\n", " ") == "efficientnet_lite0 (random weights: not a trained model), 4 images" for h in headings
    ), headings
    code = main(
        [
            "evaluate",
            "--data",
            str(root),
            "--weights",
            "none",
            "--size",
            "32",
            "--metrics",
            "faithfulness",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "unknown metric" in capsys.readouterr().err
    code = main(["evaluate", "--data", str(root), "--weights", "none", "--metric-option", "road=3", "--out", str(out)])
    assert code == 2
