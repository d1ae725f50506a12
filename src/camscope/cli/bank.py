"""Command-line parts of DiffCAM: ``camscope bank build|info|merge|counterfactual`` and ``explain --method diffcam``.

Examples::

    camscope bank build --model efficientnet_lite0 --data photos/ --out photos.bank
    camscope bank info photos.bank
    camscope explain cat.jpg --method diffcam --bank photos.bank --reference others
    camscope explain cat.jpg --method diffcam --reference folder:photos/
    camscope bank counterfactual cat.jpg --bank photos.bank --explained cats --versus dogs --out out/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import Tensor, nn

from camscope.analyses.counterfactual import counterfactual
from camscope.cli.common import WeightsOption, load_cli_model
from camscope.cli.outputs import OverwriteOption, claim_outputs, input_labels, output_name
from camscope.cli.pass_options import (
    CheckpointEveryOption,
    CheckpointOption,
    PrecisionOption,
    ResumeOption,
    WorkersOption,
    cli_device,
    is_main_process,
    pass_options,
    same_random_weights,
)
from camscope.errors import CamscopeError
from camscope.passes.batches import ImageTransform
from camscope.stats.reference_bank import ReferenceBank

__all__ = ["DiffCAMOptions", "bank_app"]

bank_app = typer.Typer(
    help="Reference banks for DiffCAM: build one from an image folder, inspect, merge, counterfactual maps.",
    no_args_is_help=True,
)

_DEFAULT_MODEL = "efficientnet_lite0"

BankOption = Annotated[Path, typer.Option("--bank", help="A reference bank file (camscope bank build).")]
RegularizationOption = Annotated[
    str, typer.Option(help="DiffCAM regularisation: 'oas' (default) or a number r >= 0 (lambda = r tr(S)/K).")
]


def _regularization(text: str) -> str | float:
    if text.strip().lower() == "oas":
        return "oas"
    try:
        return float(text)
    except ValueError:
        raise CamscopeError(f"--regularization must be 'oas' or a number >= 0, got {text!r}") from None


def _folder_images(folder: Path, size: int, config: Any) -> Tensor:
    """All images of a folder (and its class subfolders) prepared for the model, ``[N, 3, size, size]``."""
    from camscope.data.folders import ImageFolderData

    data = ImageFolderData(folder, transform=ImageTransform(size, config), size=size)
    return torch.cat([inputs for inputs, _ in data.batches(64)])


def _model_for_bank(bank: ReferenceBank, model: str | None, weights: str) -> tuple[str, nn.Module]:
    name = model or (bank.model or {}).get("name") or _DEFAULT_MODEL
    return name, load_cli_model(name, weights)


# ----------------------------------------------------------------------------- bank build


@bank_app.command("build")
def build(
    data: Annotated[
        Path, typer.Option("--data", help="Image folder: ImageFolder layout (root/CLASS/*.jpg) or flat (unlabelled).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bank file to write (safetensors + JSON metadata).")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="efficientnet_lite0 (default, offline), torchvision:NAME or timm:NAME.")
    ] = _DEFAULT_MODEL,
    weights: WeightsOption = "default",
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="Layer (default: the model's default layer).")
    ] = None,
    embedding: Annotated[
        str, typer.Option(help="'mean' (spatial mean) or 'cls' (class token of a ViT layer).")
    ] = "mean",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    size: Annotated[int, typer.Option(help="Input size.")] = 224,
    scatter: Annotated[str, typer.Option(help="'auto', 'class' (per-class scatters) or 'shared'.")] = "auto",
    device: Annotated[str, typer.Option(help="Device, e.g. cpu or cuda.")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
    workers: WorkersOption = 0,
    checkpoint: CheckpointOption = None,
    checkpoint_every: CheckpointEveryOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = "fp32",
) -> None:
    """Build a reference bank: per-class counts, means and scatters of a layer's embeddings over a folder.

    Under torchrun the pass is split over the processes; rank 0 writes the bank."""
    from camscope.data.folders import ImageFolderData
    from camscope.models import data_config

    if is_main_process():
        claim_outputs([out], overwrite)
    options = pass_options(workers, checkpoint, checkpoint_every, resume, precision)
    device = cli_device(device) or "cpu"
    same_random_weights(weights)
    network = load_cli_model(model, weights).to(device)
    config = data_config(model)
    dataset = ImageFolderData(data, transform=ImageTransform(size, config), size=size)
    bank = ReferenceBank.build(
        network,
        dataset,
        layer=layer,
        embedding=embedding,
        batch_size=batch_size,
        device=device,
        size=size,
        scatter=scatter,
        model_name=model,
        **options,
    )
    if is_main_process():
        path = bank.save(out)
        _print_info(bank, path, json_output)


def _describe(bank: ReferenceBank, path: Path) -> dict[str, Any]:
    return {
        "file": str(path),
        "model": (bank.model or {}).get("name"),
        "layer": bank.layer,
        "embedding": bank.embedding,
        "feature_size": bank.feature_size,
        "samples": bank.count,
        "scatter": bank.scatter_mode,
        "input_size": bank.input_size,
        "classes": [
            {"label": label, "name": name, "count": int(count)}
            for label, name, count in zip(bank.labels, bank.class_names, bank.counts.tolist())
        ],
    }


def _print_info(bank: ReferenceBank, path: Path, json_output: bool) -> None:
    info = _describe(bank, path)
    if json_output:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(
        f"{path}: {info['samples']} samples, {len(info['classes'])} classes, model {info['model']}, layer {bank.layer!r}, "
        f"{bank.feature_size} features ({bank.embedding} embedding, {bank.scatter_mode} scatter)"
    )
    for entry in info["classes"]:
        typer.echo(f"  {entry['label']:5d}  {entry['count']:7d}  {entry['name']}")


@bank_app.command("info")
def info(
    bank: Annotated[Path, typer.Argument(help="A bank file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show a bank's model, layer, classes and counts."""
    _print_info(ReferenceBank.load(bank), bank, json_output)


@bank_app.command("merge")
def merge(
    banks: Annotated[
        list[Path],
        typer.Argument(help="Bank files of the same model and layer (e.g. built in parallel on parts of a dataset)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Merged bank file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Merge banks exactly: the result equals the bank of all their data."""
    if len(banks) < 2:
        raise CamscopeError("merge needs at least two banks")
    claim_outputs([out], overwrite)
    merged = ReferenceBank.load(banks[0])
    for path in banks[1:]:
        merged = merged.merge(ReferenceBank.load(path))
    _print_info(merged, merged.save(out), json_output)


# ----------------------------------------------------------------------------- counterfactual


@bank_app.command("counterfactual")
def counterfactual_command(
    image: Annotated[Path, typer.Argument(help="Image of class c.")],
    bank: BankOption,
    versus: Annotated[str, typer.Option("--versus", help="Class d (bank label or name): 'why c, not d'.")],
    explained: Annotated[
        str | None, typer.Option("--explained", help="Class c (default: the image's class as DiffCAM finds it).")
    ] = None,
    counter_image: Annotated[
        Path | None, typer.Option("--counter-image", help="An image of class d for the counterpart map.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default: the model the bank was built with.")
    ] = None,
    weights: WeightsOption = "default",
    regularization: RegularizationOption = "oas",
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: INPUT__why-C-not-D[__OPTION-VALUE]....png and the counterpart "
            "(COUNTER-INPUT or INPUT)__why-D-not-C....png; existing files need --overwrite."
        ),
    ] = Path("camscope-out"),
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Counterfactual pair: the map of 'why c, not d' and of its counterpart 'why d, not c'."""
    from camscope.models import data_config, load_image
    from camscope.viz.figures import save_figure

    loaded = ReferenceBank.load(bank)
    model_name, network = _model_for_bank(loaded, model, weights)
    config = data_config(model_name)
    size = int((loaded.input_size or [224])[-1])
    for path in [image] + ([counter_image] if counter_image else []):
        if not path.is_file():
            raise CamscopeError(f"no such image file: {path}")
    x, rgb = load_image(image, size=size, config=config)
    counter = load_image(counter_image, size=size, config=config) if counter_image else None
    pair = counterfactual(
        network,
        x,
        loaded,
        versus=versus,
        explained=explained,
        counter_inputs=counter[0] if counter else None,
        regularization=_regularization(regularization),
    )
    c, d = int(pair.explained[0]), pair.versus
    c_name, d_name = loaded.class_name(c), loaded.class_name(d)
    base, base_rgb = (counter_image, counter[1]) if counter_image is not None and counter else (image, rgb)
    labels = input_labels([image, counter_image] if counter_image is not None else [image])
    naming = [
        ("model", model),
        ("random-weights", weights.strip().lower() == "none"),
        ("bank", bank.stem),
        ("reg", None if regularization.strip().lower() == "oas" else regularization),
    ]
    why_path = out / output_name(labels[0], f"why-{_slug(c_name)}-not-{_slug(d_name)}", naming)
    other_path = out / output_name(labels[-1], f"why-{_slug(d_name)}-not-{_slug(c_name)}", naming)
    claim_outputs([why_path, other_path], overwrite)
    layer = str(pair.why.layer) + (
        " | random weights: not a trained model" if weights.strip().lower() == "none" else ""
    )
    why = save_figure(why_path, _pair_figure(rgb, pair.why.maps[0], f"why {c_name}, not {d_name}", image, layer))
    other = save_figure(
        other_path, _pair_figure(base_rgb, pair.counterpart.maps[0], f"why {d_name}, not {c_name}", base, layer)
    )
    report = {
        "image": str(image),
        "explained": {"label": c, "name": c_name},
        "versus": {"label": d, "name": d_name},
        "why": str(why),
        "counterpart": str(other),
        "counterpart_on": str(counter_image) if counter_image else "image (mean of the versus class)",
    }
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{image}: why {c_name}, not {d_name}: wrote {why}")
    typer.echo(f"{base}: why {d_name}, not {c_name}: wrote {other}")


def _pair_figure(rgb: Any, cam: Tensor, title: str, image: Path, layer: str) -> Any:
    """One DiffCAM counterfactual map over its image, titled with the question, the image and the layer."""
    from camscope.viz.figures import colorbar, new_figure, overlay

    figure = new_figure((3.6, 3.4))
    axis = figure.add_subplot()
    axis.imshow(overlay(rgb, cam))
    axis.set_title(f"DiffCAM: {title}\n{image.name}, layer {layer}", fontsize=8)
    axis.axis("off")
    colorbar(figure, axis)
    return figure


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name.strip())[:40] or "class"


# ----------------------------------------------------------------------------- explain --method diffcam


class DiffCAMOptions:
    """What ``camscope explain --bank B --reference SPEC --regularization R`` adds for the ``diffcam`` method.

    ``--reference``: ``others``, ``all``, ``intra``, ``knn[:K]``, ``class:NAME[,NAME]``
    (with ``--bank``) or ``folder:PATH`` (the images of a folder, embedded with the
    explained model; no bank needed). ``--target`` names a bank class when the bank has it.
    """

    def __init__(
        self,
        bank: Path | None,
        reference: str | None,
        regularization: str | None,
        target: str | None,
        methods: list[str],
        config: Any,
        size: int,
        model: str | None = None,
    ) -> None:
        self.active = any(m.lower() == "diffcam" for m in methods)
        if not self.active:
            if bank is not None or reference is not None or regularization is not None:
                raise CamscopeError("--bank, --reference and --regularization apply to --method diffcam")
            return
        self.bank = ReferenceBank.load(bank) if bank is not None else None
        built_with = (self.bank.model or {}).get("name") if self.bank is not None else None
        if built_with and model and built_with.strip().lower() != model.strip().lower():
            raise CamscopeError(
                f"the bank {bank} was built with model {built_with!r}, not {model!r}: pass --model {built_with}"
            )
        self.options: dict[str, Any] = {}
        if self.bank is not None:
            self.options["bank"] = self.bank
        if regularization is not None:
            self.options["regularization"] = _regularization(regularization)
        if reference is not None:
            kind, _, argument = reference.partition(":")
            if kind.strip().lower() == "folder":
                folder = Path(argument).expanduser()
                self.options["reference"] = _folder_images(folder, size, config)
            else:
                self.options["reference"] = reference
        self.target = None
        if target is not None and self.bank is not None:
            try:
                self.target = self.bank.label_of(target)
            except CamscopeError:
                self.target = None

    @property
    def owns_target(self) -> bool:
        """``--target`` is a class of the bank (so the model's class names do not apply)."""
        return self.active and self.target is not None

    def layer(self, method: str) -> str | None:
        return self.bank.layer if self._is(method) and self.bank is not None else None

    def method_options(self, method: str) -> dict[str, Any]:
        return dict(self.options) if self._is(method) else {}

    def target_for(self, method: str, default: Any) -> Any:
        return self.target if self._is(method) and self.target is not None else default

    def _is(self, method: str) -> bool:
        return self.active and method.lower() == "diffcam"
