"""Command-line parts of Finer-CAM: ``camscope similarity``, ``camscope prompts`` and the Finer figure of ``explain``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.common import (
    MODEL_HELP,
    DeviceOption,
    SeedOption,
    WeightsOption,
    image_files,
    load_cli_model,
    method_list,
    model_option,
    random_weights,
    resolve_class,
)
from camscope.cli.outputs import OverwriteOption, claim_outputs, input_labels, output_name, slug
from camscope.cli.pass_options import cli_device
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from camscope.viz.figures import Picture

__all__ = ["check_finer_cli_options", "finer_cli_options", "finer_figure", "finer_references", "prompts", "similarity"]


# ---------------------------------------------------------------------- explain --method finer-*


def finer_cli_options(
    method: str,
    versus: Sequence[str] | None,
    gamma: float | None,
    references: int | None,
    network: nn.Module,
    batch: Tensor,
) -> dict[str, Any]:
    """The Finer options of ``camscope explain`` for one method (empty for a method that is not ``finer-*``).

    ``--versus`` classes (indices or ImageNet names) become explicit references;
    ``--references T`` the number of automatic ones.
    """
    if not method.lower().replace("_", "-").startswith("finer-"):
        return {}
    options: dict[str, Any] = {}
    if gamma is not None:
        options["gamma"] = gamma
    if versus:
        if references is not None:
            raise CamscopeError(
                "give either --versus CLASS (explicit references) or --references T (how many), not both"
            )
        import torch

        with torch.no_grad():
            num_classes = network(batch[:1]).shape[1]
        options["references"] = [resolve_class(spec, num_classes) for spec in versus]
    elif references is not None:
        options["references"] = references
    return options


def check_finer_cli_options(
    methods: Sequence[str], versus: Sequence[str] | None, gamma: float | None, references: int | None
) -> None:
    """``--versus``/``--gamma``/``--references`` need a ``finer-*`` method."""
    if (versus or gamma is not None or references is not None) and not any(
        m.lower().replace("_", "-").startswith("finer-") for m in methods
    ):
        raise CamscopeError(
            "--versus, --gamma and --references set Finer-CAM's comparison: use them with a finer-* method, "
            "e.g. --method finer-gradcam"
        )


def finer_references(explanation: Any, index: int, names: Sequence[str]) -> list[dict[str, Any]]:
    """The reference classes of one sample: index, name, probability and weight in the aggregate."""
    from camscope.targets.finer import Finer

    target = explanation.targets
    references = target.references() if isinstance(target, Finer) else None
    if references is None:
        return []
    probabilities = explanation.logits[index].softmax(dim=0)
    weights = target.reference_weights()[index]
    return [
        {"class": int(c), "name": names[int(c)], "probability": float(probabilities[int(c)]), "weight": float(w)}
        for c, w in zip(references[index], weights)
    ]


#: A Finer figure lists at most this many compared classes, then one line for the rest.
SHOWN_REFERENCES = 8


def reference_list(references: Sequence[dict[str, Any]], shown: int = SHOWN_REFERENCES) -> str:
    """The compared classes under a Finer map: the first ``shown`` with their probabilities, then a summary line.

    Example:
        >>> rows = [{"name": f"class {i}", "probability": 0.001} for i in range(300)]
        >>> reference_list(rows, shown=2).splitlines()
        ['versus', '  0.1%  class 0', '  0.1%  class 1', '+ 298 more classes (total 29.8%)']
    """
    lines = [f"{r['probability'] * 100:5.1f}%  {r['name'][:22]}" for r in references[:shown]]
    rest = references[shown:]
    if rest:
        total = sum(r["probability"] for r in rest) * 100
        lines.append(f"+ {len(rest)} more classes (total {total:.1f}%)")
    return "\n".join(["versus", *lines])


def finer_figure(
    network: nn.Module,
    batch: Tensor,
    explanation: Any,
    index: int,
    image: Picture,
    names: Sequence[str],
    title: str = "",
    note: str = "",
) -> Any:
    """The base map, the Finer map and the reference classes (name, probability) of one image of a ``finer-*`` explanation.

    The title says the layer (and ``note``, e.g. random weights); a colour bar gives the map scale.
    """

    import camscope
    from camscope.viz.figures import colorbar, framed, new_figure, overlay

    target = explanation.targets
    method = str(explanation.method)
    base_name = method.split("-", 1)[1] if method.startswith("finer-") else method
    explained = int(target.classes()[index])
    base = camscope.Explainer(network, layer=explanation.layer, method=base_name)(
        batch[index : index + 1], target=[explained]
    )
    probabilities = explanation.logits[index].softmax(dim=0)
    references = finer_references(explanation, index, names)
    figure = new_figure((8.4, 3.6))
    axes = figure.subplots(1, 3, squeeze=False)
    axes = axes[0]
    axes[0].imshow(framed(image))
    axes[0].set_title(title or "input", fontsize=9)
    top = probabilities.topk(min(5, probabilities.numel()))
    axes[0].text(
        0.02,
        -0.04,
        "\n".join(f"{float(p) * 100:5.1f}%  {names[int(i)][:22]}" for p, i in zip(top.values, top.indices)),
        transform=axes[0].transAxes,
        va="top",
        ha="left",
        fontsize=7,
        family="monospace",
    )
    explained_label = f"{names[explained][:24]} ({float(probabilities[explained]) * 100:.1f}%)"
    axes[1].imshow(overlay(image, base.maps[0]))
    axes[1].set_title(f"{base_name}:\n{explained_label}", fontsize=8)
    axes[2].imshow(overlay(image, explanation.maps[index]))
    versus = ", ".join(r["name"][:14] for r in references[:3]) + (" ..." if len(references) > 3 else "")
    axes[2].set_title(
        f"{method}: {names[explained][:18]}\nvs {versus}\n(gamma {target.gamma:g}, {target.aggregate})", fontsize=7
    )
    axes[2].text(
        0.02,
        -0.04,
        reference_list(references),
        transform=axes[2].transAxes,
        va="top",
        ha="left",
        fontsize=7,
        family="monospace",
    )
    for axis in axes:
        axis.axis("off")
    layer = explanation.layer if isinstance(explanation.layer, str) else "+".join(explanation.layer)
    figure.suptitle(
        " | ".join(p for p in (f"layer {layer}", note) if p), fontsize=8, color="firebrick" if note else "black"
    )
    colorbar(figure, list(axes[1:]))
    return figure


# ---------------------------------------------------------------------- camscope similarity


def similarity(
    model_argument: Annotated[str | None, typer.Argument(hidden=True, metavar="(use --model)")] = None,
    model_name: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    weights: WeightsOption = "default",
    seed: SeedOption = 0,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Class (index or name) to list the most similar classes of; repeat."),
    ] = None,
    top: Annotated[int, typer.Option(help="How many similar classes (or pairs) to list.")] = 5,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output folder of the sorted-similarity curve (the Finer-CAM paper's Fig. 1), "
            "similarity__MODEL[__random-weights].png, or a .png file. Existing files need --overwrite.",
        ),
    ] = Path("camscope-out/similarity"),
    output: Annotated[Path | None, typer.Option("--output", hidden=True, help="Old name of --out FILE.png.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Cosine similarity of the classifier's rows: the most similar classes, and the sorted-similarity curve."""
    from camscope.analyses.similarity import class_similarity
    from camscope.viz.analysis import similarity_curve
    from camscope.viz.figures import save_figure

    if top < 1:
        raise CamscopeError(f"--top must be at least 1, got {top}")
    model = model_option(model_name, model_argument)
    random = random_weights(weights)
    if output is None:
        naming = [("random-weights", random), ("seed", seed if random and seed else None)]
        output = out if out.suffix.lower() == ".png" else out / output_name("similarity", model, naming)
    claim_outputs([output], overwrite)
    network = load_cli_model(model, weights, seed)
    result = class_similarity(network)
    count = result.matrix.shape[0]
    indices = [_class_of(result, spec, count) for spec in classes or []]
    mean, std = result.curve()
    report: dict[str, Any] = {
        "model": model,
        "classes": count,
        "most_similar_mean": float(mean[0]),
        "most_similar_std": float(std[0]),
        "neighbours": {
            result.name(i): [
                {"class": j, "name": name, "cosine": value} for j, name, value in result.most_similar(i, top)
            ]
            for i in indices
        },
        "pairs": [
            {"classes": [p, q], "names": [result.name(p), result.name(q)], "cosine": value}
            for p, q, value in ([] if indices else result.most_similar_pairs(top))
        ],
    }
    label = f"{model} (random weights, seed {seed})" if random else model
    report["curve"] = str(save_figure(output, similarity_curve(result, label=label), dpi=120))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{model}: {count} classes; cosine to the most similar class: {report['most_similar_mean']:.3f} +- {report['most_similar_std']:.3f}"
    )
    for name, rows in report["neighbours"].items():
        typer.echo(f"{name}:")
        for row in rows:
            typer.echo(f"  {row['cosine']:+.3f}  {row['class']:4d}  {row['name']}")
    if report["pairs"]:
        typer.echo("most similar pairs:")
        for row in report["pairs"]:
            typer.echo(f"  {row['cosine']:+.3f}  {row['names'][0]}  /  {row['names'][1]}")
    typer.echo(f"wrote {report['curve']}")


def _class_of(result: Any, spec: str, count: int) -> int:
    if count == 1000 and not spec.strip().isdigit():
        return resolve_class(spec, count)
    return result.index(spec)


# ---------------------------------------------------------------------- camscope prompts


def prompts(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Text prompt to localise; repeat for several.")],
    versus: Annotated[
        list[str] | None,
        typer.Option(
            "--versus",
            "-v",
            help="Prompt to compare with (Finer-CAM); repeat for several. Default: the other --prompt texts.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A transformers CLIP id or saved folder, open_clip:ARCH/PRETRAINED, or camscope:species-clip (the "
            "shipped image-text model of the synthetic species, offline).",
        ),
    ] = "openai/clip-vit-base-patch16",
    method: Annotated[
        list[str] | None, typer.Option("--method", help="Base CAM method (one; spelling forgiven: GradCAM is gradcam).")
    ] = None,
    gamma: Annotated[float, typer.Option(help="Comparison strength of the Finer map.")] = 0.6,
    layer: Annotated[
        str | None,
        typer.Option("--layer", "-l", help="Layer of the image tower (default: last block's first norm / last stage)."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: INPUT__prompts-METHOD__PROMPTS[__vs-VERSUS][__gamma-G][__layer-L][__model-M].png; "
            "existing files need --overwrite."
        ),
    ] = Path("camscope-out/prompts"),
    device: DeviceOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Localise text prompts with CLIP, alone and compared with other prompts ("red epaulets" versus "bird")."""
    import torch

    import camscope
    from camscope.models import load_photo
    from camscope.models.clip import load_clip
    from camscope.targets.finer import Finer
    from camscope.viz.figures import save_figure

    texts = [p for p in prompt if p.strip()]
    if not texts:
        raise CamscopeError("give at least one non-empty --prompt")
    others = [v for v in (versus or []) if v.strip()]
    chosen = method_list(method)
    if len(chosen) > 1:
        raise CamscopeError(f"give one base --method for prompts, got {', '.join(chosen)}")
    method_name = chosen[0]
    if method_name.startswith("finer-"):
        raise CamscopeError(
            f"--method is the base method (e.g. gradcam); the comparison is added for --versus, not {method_name!r}"
        )
    images = image_files(images)
    naming = [
        ("prompts", texts),
        ("vs", others),
        ("gamma", None if gamma == 0.6 else gamma),
        ("layer", layer),
        ("model", None if model == "openai/clip-vit-base-patch16" else model),
    ]
    files = [out / output_name(label, f"prompts-{slug(method_name)}", naming) for label in input_labels(images)]
    claim_outputs(files, overwrite)
    loaded = load_clip(model, device=cli_device(device))
    classifier = loaded.classifier(texts + others)
    size = int(loaded.config.input_size)
    pictures = [load_photo(path, size=size, config=loaded.config) for path in images]
    batch = torch.cat([tensor for tensor, _ in pictures]).to(next(loaded.model.parameters()).device)
    explainer = camscope.Explainer(classifier, layer=layer, method=method_name)
    rows = []
    for i, text in enumerate(texts):
        base = explainer(batch, target=i)
        references = (
            list(range(len(texts), len(texts) + len(others))) if others else [j for j in range(len(texts)) if j != i]
        )
        finer = explainer(batch, target=Finer(explained=i, references=references, gamma=gamma)) if references else None
        rows.append((text, base, finer, references))
    probabilities = rows[0][1].logits.softmax(dim=1)
    labels = list(classifier.prompts)
    report: list[dict[str, Any]] = []
    for index, (path, (_, photo)) in enumerate(zip(images, pictures)):
        figure = _prompts_figure(photo, rows, index, labels, probabilities[index], method_name, gamma, title=path.stem)
        written = save_figure(files[index], figure)
        report.append(
            {
                "image": str(path),
                "prompts": [
                    {
                        "prompt": label,
                        "logit": float(rows[0][1].logits[index, j]),
                        "probability": float(probabilities[index, j]),
                    }
                    for j, label in enumerate(labels)
                ],
                "compared": {text: [labels[j] for j in refs] for text, _, _, refs in rows},
                "layer": rows[0][1].layer,
                "files": [str(written)],
            }
        )
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for entry in report:
        typer.echo(entry["image"])
        for row in entry["prompts"]:
            typer.echo(f"  {row['probability'] * 100:6.2f}%  {row['prompt']}")
        for file in entry["files"]:
            typer.echo(f"  wrote {file}")


def _prompts_figure(
    image: Picture,
    rows: list[tuple[str, Any, Any, list[int]]],
    index: int,
    labels: Sequence[str],
    probabilities: Tensor,
    method: str,
    gamma: float,
    title: str,
) -> Any:

    from camscope.viz.figures import colorbar, framed, new_figure, overlay

    figure = new_figure((8.4, 3.0 * len(rows)))

    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row, (text, base, finer, references) in zip(axes, rows):
        row[0].imshow(framed(image))
        row[0].set_title(title, fontsize=9)
        row[1].imshow(overlay(image, base.maps[index]))
        position = labels.index(text)
        row[1].set_title(f"{method}: '{text[:28]}' ({float(probabilities[position]) * 100:.1f}%)", fontsize=8)
        if finer is not None:
            row[2].imshow(overlay(image, finer.maps[index]))
            versus = ", ".join(f"'{labels[j][:18]}'" for j in references[:3])
            versus += f" + {len(references) - 3} more" if len(references) > 3 else ""
            row[2].set_title(f"'{text[:20]}' vs {versus} (gamma {gamma:g})", fontsize=8)
        for axis in row:
            axis.axis("off")
    figure.suptitle(f"layer {rows[0][1].layer}", fontsize=8)
    colorbar(figure, [axis for row in axes for axis in row[1:]])
    return figure
