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
from camscope.cli.outputs import (
    CmapOption,
    DpiOption,
    FormatOption,
    OverwriteOption,
    claim_outputs,
    figure_style,
    input_labels,
    output_name,
    slug,
)
from camscope.cli.pass_options import cli_device
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from camscope.viz.figures import Picture
    from camscope.viz.style import FigureStyle

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


def finer_figure(
    network: nn.Module,
    batch: Tensor,
    explanation: Any,
    index: int,
    image: Picture,
    names: Sequence[str],
    title: str = "",
    note: str = "",
    *,
    model: str = "",
    style: FigureStyle | None = None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
) -> Any:
    """The Finer figure of one image of a ``finer-*`` explanation (:func:`camscope.viz.finer.finer_figure`).

    The base method's map of the explained class is computed here (one more explanation of the image,
    with the Finer map's ``eigen_smooth`` and ``aug_smooth``), and what
    Finer-CAM changed is measured against it (:func:`camscope.viz.compare.explanation_shift`).
    """
    import camscope
    from camscope.engine.method import method_class
    from camscope.viz.compare import explanation_shift
    from camscope.viz.finer import finer_figure as draw
    from camscope.viz.style import layer_label, shorten

    target = explanation.targets
    method = str(explanation.method)
    base_name = method.split("-", 1)[1] if method.startswith("finer-") else method
    explained = int(target.classes()[index])
    one = slice(index, index + 1)
    # An attention method's layer names the attention modules it read, not a layer to explain at.
    base_layer = explanation.layer if method_class(base_name).reads_layer else None
    explainer = camscope.Explainer(
        network, layer=base_layer, method=base_name, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth
    )
    base = explainer(batch[one], target=[explained])
    probabilities = explanation.logits[index].softmax(dim=0)
    top = probabilities.topk(min(5, probabilities.numel()))
    layer = layer_label(explanation.layer)
    return draw(
        image,
        base.maps[0],
        explanation.maps[index],
        method=method if method.startswith("finer-") else f"finer-{method}",
        explained=f"{shorten(names[explained], 24)} {float(probabilities[explained]) * 100:.1f}%",
        references=[(r["name"], r["probability"]) for r in finer_references(explanation, index, names)],
        shift=explanation_shift(base, _one(explanation, one)),
        predictions=[(names[int(i)], float(p)) for p, i in zip(top.values, top.indices)],
        gamma=float(target.gamma),
        aggregate=str(target.aggregate),
        title=title,
        layer=layer,
        model=model,
        note=note,
        style=style,
    )


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
            "similarity__MODEL[__random-weights].png, or a .png, .pdf or .svg file (its suffix sets the format). "
            "Existing files need --overwrite.",
        ),
    ] = Path("camscope-out/similarity"),
    output: Annotated[Path | None, typer.Option("--output", hidden=True, help="Old name of --out FILE.png.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 120,
    cmap: CmapOption = None,
) -> None:
    """Cosine similarity of the classifier's rows: the most similar classes, and the sorted-similarity curve."""
    from camscope.analyses.similarity import class_similarity
    from camscope.viz.analysis import similarity_curve
    from camscope.viz.figures import save_figure

    if top < 1:
        raise CamscopeError(f"--top must be at least 1, got {top}")
    model = model_option(model_name, model_argument)
    random = random_weights(weights)
    style = figure_style(out.suffix.lstrip(".") if out.suffix.lower() in (".png", ".pdf", ".svg") else fmt, dpi, cmap)
    if output is None:
        naming = [("random-weights", random), ("seed", seed if random and seed else None)]
        output = out if out.suffix == style.suffix else out / output_name("similarity", model, naming, style.suffix)
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
    report["curve"] = str(save_figure(output, similarity_curve(result, label=label), style=style))
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


_VersusPromptOption = Annotated[
    list[str] | None,
    typer.Option(
        "--versus",
        "-v",
        help="Prompt to compare with (Finer-CAM); repeat for several. Default: the other --prompt texts.",
    ),
]
_ClipModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A transformers CLIP id or saved folder, open_clip:ARCH/PRETRAINED, or camscope:species-clip (the "
        "shipped image-text model of the synthetic species, offline).",
    ),
]
_BaseMethodOption = Annotated[
    list[str] | None, typer.Option("--method", help="Base CAM method (one; spelling forgiven: GradCAM is gradcam).")
]
_ClipLayerOption = Annotated[
    str | None,
    typer.Option("--layer", "-l", help="Layer of the image tower (default: last block's first norm / last stage)."),
]
_PromptsOutOption = Annotated[
    Path,
    typer.Option(
        help="Output folder: INPUT__prompts-METHOD__PROMPTS[__vs-VERSUS][__gamma-G][__layer-L][__model-M].png; "
        "existing files need --overwrite."
    ),
]


def prompts(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Text prompt to localise; repeat for several.")],
    versus: _VersusPromptOption = None,
    model: _ClipModelOption = "openai/clip-vit-base-patch16",
    method: _BaseMethodOption = None,
    gamma: Annotated[float, typer.Option(help="Comparison strength of the Finer map.")] = 0.6,
    layer: _ClipLayerOption = None,
    out: _PromptsOutOption = Path("camscope-out/prompts"),
    device: DeviceOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Localise text prompts with CLIP, alone and compared with other prompts ("red epaulets" versus "bird")."""
    import torch

    import camscope
    from camscope.models import load_photo
    from camscope.models.clip import load_clip
    from camscope.viz.figures import save_figure

    device = cli_device(device)
    texts = [p for p in prompt if p.strip()]
    if not texts:
        raise CamscopeError("give at least one non-empty --prompt")
    others = [v for v in (versus or []) if v.strip()]
    method_name = _base_method(method)
    images = image_files(images)
    naming = [
        ("prompts", texts),
        ("vs", others),
        ("gamma", None if gamma == 0.6 else gamma),
        ("layer", layer),
        ("model", None if model == "openai/clip-vit-base-patch16" else model),
    ]
    style = figure_style(fmt, dpi, cmap)
    what = f"prompts-{slug(method_name)}"
    files = [out / output_name(label, what, naming, suffix=style.suffix) for label in input_labels(images)]
    claim_outputs(files, overwrite)
    loaded = load_clip(model, device=device)
    classifier = loaded.classifier(texts + others)
    size = int(loaded.config.input_size)
    pictures = [load_photo(path, size=size, config=loaded.config) for path in images]
    batch = torch.cat([tensor for tensor, _ in pictures]).to(next(loaded.model.parameters()).device)
    rows = _prompt_rows(camscope.Explainer(classifier, layer=layer, method=method_name), batch, texts, others, gamma)
    probabilities = rows[0][1].logits.softmax(dim=1)
    labels = list(classifier.prompts)
    report: list[dict[str, Any]] = []
    for index, (path, (_, photo)) in enumerate(zip(images, pictures)):
        figure = _prompts_figure(
            photo, rows, index, labels, probabilities[index], method_name, gamma, path.stem, model, style
        )
        written = save_figure(files[index], figure, style=style)
        report.append(_prompt_entry(path, rows, index, labels, probabilities, written))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for entry in report:
        typer.echo(entry["image"])
        for row in entry["prompts"]:
            typer.echo(f"  {row['probability'] * 100:6.2f}%  {row['prompt']}")
        for file in entry["files"]:
            typer.echo(f"  wrote {file}")


def _base_method(method: list[str] | None) -> str:
    """The one base method of ``--method`` (the Finer comparison is added for ``--versus``)."""
    chosen = method_list(method)
    if len(chosen) > 1:
        raise CamscopeError(f"give one base --method for prompts, got {', '.join(chosen)}")
    method_name = chosen[0]
    if method_name.startswith("finer-"):
        raise CamscopeError(
            f"--method is the base method (e.g. gradcam); the comparison is added for --versus, not {method_name!r}"
        )
    return method_name


def _prompt_rows(
    explainer: Any, batch: Any, texts: list[str], others: list[str], gamma: float
) -> list[tuple[str, Any, Any, list[int]]]:
    """Per prompt: its text, its base map, its Finer map against the compared prompts (or None) and their indices.

    The compared prompts are the ``--versus`` ones (after the prompts), or else the other prompts.
    """
    from camscope.targets.finer import Finer

    rows = []
    for i, text in enumerate(texts):
        base = explainer(batch, target=i)
        references = (
            list(range(len(texts), len(texts) + len(others))) if others else [j for j in range(len(texts)) if j != i]
        )
        finer = explainer(batch, target=Finer(explained=i, references=references, gamma=gamma)) if references else None
        rows.append((text, base, finer, references))
    return rows


def _prompt_entry(
    path: Path,
    rows: list[tuple[str, Any, Any, list[int]]],
    index: int,
    labels: list[str],
    probabilities: Any,
    written: Path,
) -> dict[str, Any]:
    """The JSON report of one image: each prompt's logit and probability, the comparisons, the layer, the file."""
    return {
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


def _prompts_figure(
    image: Picture,
    rows: list[tuple[str, Any, Any, list[int]]],
    index: int,
    labels: Sequence[str],
    probabilities: Tensor,
    method: str,
    gamma: float,
    title: str,
    model: str = "",
    style: FigureStyle | None = None,
) -> Any:
    """The prompts figure of one image (:func:`camscope.viz.finer.prompts_figure`), with what each comparison changed."""
    from camscope.viz.compare import explanation_shift
    from camscope.viz.finer import PromptRow, prompts_figure

    one = slice(index, index + 1)
    drawn = []
    for text, base, finer, references in rows:
        shift = None
        if finer is not None:
            shift = explanation_shift(_one(base, one), _one(finer, one))
        drawn.append(
            PromptRow(
                prompt=text,
                probability=float(probabilities[labels.index(text)]),
                base=base.maps[index],
                finer=None if finer is None else finer.maps[index],
                versus=[labels[j] for j in references],
                shift=shift,
            )
        )
    layer = rows[0][1].layer
    return prompts_figure(
        image, drawn, method=method, gamma=gamma, title=title, layer=str(layer), model=model, style=style
    )


def _one(explanation: Any, part: slice) -> Any:
    """One sample of an explanation, as :func:`camscope.viz.compare.explanation_shift` reads it."""
    import camscope

    return camscope.Explanation(
        raw=explanation.raw[part],
        maps=explanation.maps[part],
        weights=None,
        contributions=None,
        logits=explanation.logits[part],
        targets=explanation.targets,
        scores=explanation.scores[part],
        method=explanation.method,
        layer=explanation.layer,
    )
