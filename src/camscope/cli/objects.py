"""The command line's detection and segmentation: ``explain --task detect|segment`` and ``evaluate --data camscope:scenes``.

Glue over :mod:`camscope.engine.objects` (the objects of an image and their maps) and
:func:`camscope.evaluation.objects.evaluate_objects` (box pointing and mask IoU per object).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from camscope.errors import CamscopeError

if TYPE_CHECKING:  # torch is imported by the commands that run, never by --help
    import torch

__all__ = [
    "SCENES_DATA",
    "TASK_CHOICES",
    "check_object_options",
    "evaluate_scenes",
    "explain_objects",
    "is_scenes_data",
]

#: ``--data`` for the test scenes of the shipped scene models.
SCENES_DATA = "camscope:scenes"
#: ``explain --task``: what the model does.
TASK_CHOICES = ("classify", "detect", "segment")


def is_scenes_data(data: Path) -> bool:
    """``--data camscope:scenes`` (the shipped test scenes) rather than a folder."""
    return str(data).strip().lower().startswith("camscope:")


def evaluate_scenes(
    data: Path,
    model: str,
    weights: str,
    seed: int,
    methods: list[str],
    metrics: list[str] | None,
    out: Path,
    **options: Any,
) -> None:
    """``camscope evaluate --data camscope:scenes``: box pointing and mask IoU per object of the shipped scenes."""
    from camscope.cli.common import load_cli_model
    from camscope.cli.outputs import claim_outputs
    from camscope.data.small_models import scene_data
    from camscope.evaluation.objects import OBJECT_METRICS, evaluate_objects
    from camscope.models.scene_zoo import SCENE_MODELS

    if str(data).strip().lower() != SCENES_DATA:
        raise CamscopeError(f"--data takes an image folder or {SCENES_DATA} (the shipped test scenes), got {data}")
    unsupported = [name for name in (metrics or []) if name.strip().lower().replace("-", "_") not in OBJECT_METRICS]
    if unsupported:
        raise CamscopeError(
            f"--data {SCENES_DATA} is measured per object with {', '.join(OBJECT_METRICS)}; "
            f"{', '.join(unsupported)} work on image folders"
        )
    if options["workers"] or options["checkpoint"] is not None or options["resume"]:
        raise CamscopeError(f"--data {SCENES_DATA} runs in one process: drop --workers, --checkpoint and --resume")
    if options["precision"] != "fp32":
        raise CamscopeError(f"--data {SCENES_DATA} runs in fp32: drop --precision {options['precision']}")
    name = model.strip()[len("camscope:") :] if model.strip().lower().startswith("camscope:") else ""
    scenes = scene_data(name if name in SCENE_MODELS else SCENE_MODELS[0], "test", options["limit"])
    plots, style = options["plots"], options["style"]
    claim_outputs(
        [out / "summary.csv", out / "per_sample.csv", out / "results.json"]
        + ([out / f"curves_mask_iou{style.suffix}"] if plots else []),
        options["overwrite"],
    )
    network = load_cli_model(model, weights, seed, options["device"])
    report = evaluate_objects(
        network,
        scenes,
        methods,
        layer=options["layer"],
        batch_size=options["batch_size"],
        method_options=options["method_options"],
        model_name=model,
        out=out,
        plots=False,  # drawn below, in --format
    )
    drawn = [f"curves_{metric}{style.suffix}" for metric in report.curve_metrics()] if plots else []
    if plots:
        report.plot_curves(out, style=style)
    if options["json_output"]:
        typer.echo(json.dumps(report.to_json()["summary"], indent=1, allow_nan=False))
        return
    from rich.console import Console

    Console().print(report.table())
    typer.echo(f"wrote {out}/summary.csv, per_sample.csv, results.json" + (f", {', '.join(drawn)}" if drawn else ""))


def check_object_options(task: str, methods: list[str], given: dict[str, Any]) -> None:
    """Refuse what ``--task detect|segment`` does not do: the comparison methods and their options, ``--save``."""
    from camscope.engine.method import method_class

    comparing = [m for m in methods if m.startswith("finer-") or method_class(m).name == "diffcam"]
    if comparing:
        raise CamscopeError(
            f"--task {task} explains each box or region with the class methods (gradcam, eigencam, scorecam, ...); "
            f"{', '.join(comparing)} on a box or a region is in the Python API (camscope.OnBox, camscope.OnRegion)"
        )
    used = [flag for flag, value in given.items() if value not in (None, False, [])]
    if used:
        raise CamscopeError(f"--task {task} does not take {', '.join(used)}: drop them")


def _class_filter(target: str | None, names: list[str]) -> list[int] | None:
    """``--target``: a class index or one of the model's class names (case and a unique part forgiven)."""
    if target is None:
        return None
    text = target.strip()
    if text.lstrip("+-").isdigit():
        index = int(text)
        if not 0 <= index < len(names):
            raise CamscopeError(f"--target {text} is out of range: the model has classes 0 to {len(names) - 1}")
        return [index]
    exact = [i for i, name in enumerate(names) if name.lower() == text.lower()]
    partial = [i for i, name in enumerate(names) if text.lower() in name.lower()]
    chosen = exact or partial
    if len(chosen) != 1:
        listed = ", ".join(names[i] for i in (chosen or range(len(names))))
        raise CamscopeError(f"--target {text!r} names {'several' if chosen else 'no'} class(es) of the model: {listed}")
    return chosen


def explain_objects(
    files: list[Path],
    network: torch.nn.Module,
    batch: torch.Tensor,
    photos: list[Any],
    stems: list[str],
    methods: list[str],
    *,
    task: str,
    model: str,
    layer: list[str] | None,
    target: str | None,
    score_threshold: float,
    max_objects: int,
    out: Path,
    note: str,
    json_output: bool,
    style: Any = None,
) -> None:
    """``camscope explain --task detect|segment``: per image, the boxes or regions found, one map each per method."""
    from camscope.engine.objects import explain_objects as explain_each
    from camscope.engine.objects import find_objects
    from camscope.viz.figures import save_figure
    from camscope.viz.objects import objects_figure

    if len(layer or []) > 1:
        raise CamscopeError(f"--task {task} explains one layer: give --layer once")
    names = _names(network, batch)
    classes = _class_filter(target, names)
    report = []
    for index, (path, photo) in enumerate(zip(files, photos)):
        image = batch[index : index + 1]
        found = find_objects(
            network, image, task=task, score_threshold=score_threshold, max_objects=max_objects, classes=classes
        )
        found = explain_each(network, image, methods, objects=found, layer=layer[0] if layer else None)
        used = next(iter(found.maps.values())).layer if found.maps else (layer[0] if layer else "")
        figure = objects_figure(
            photo, found, names, model=model, title=str(path), layer=str(used), note=note,
            cmap=None if style is None else style.cmap,
        )  # fmt: skip
        written = save_figure(out / f"{stems[index]}{'.png' if style is None else style.suffix}", figure, style=style)
        report.append(_entry(path, found, names, written))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for entry in report:
        typer.echo(entry["image"])
        if not entry["objects"]:
            typer.echo(f"  nothing found with a score of at least {score_threshold} (lower --score-threshold)")
        for number, item in enumerate(entry["objects"], start=1):
            typer.echo(f"  {number}: {item['score']:.3f}  {item['class']:3d}  {item['name']}  box {item['box']}")
        typer.echo(f"  wrote {entry['file']}")


def _names(network: torch.nn.Module, batch: torch.Tensor) -> list[str]:
    import torch

    from camscope.cli.common import class_names_for

    count = getattr(network, "num_classes", None)
    if not isinstance(count, int):
        from camscope.targets.detection import model_num_classes

        count = model_num_classes(network)
    if not isinstance(count, int):
        from camscope.targets.outputs import output_tensor

        with torch.no_grad():
            count = int(output_tensor(network(batch[:1])).shape[1])
    return class_names_for(network, count)


def _entry(path: Path, found: Any, names: list[str], written: Path) -> dict[str, Any]:
    def named(label: int) -> str:
        return names[label] if 0 <= label < len(names) else f"class {label}"

    return {
        "image": str(path),
        "task": found.task,
        "objects": [
            {
                "class": int(label),
                "name": named(int(label)),
                "score": float(score),
                "box": [round(float(v), 1) for v in box],
            }
            for label, score, box in zip(found.labels, found.scores, found.boxes)
        ],
        "methods": list(found.maps),
        "file": str(written),
    }
