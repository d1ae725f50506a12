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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.common import (
    DeviceOption,
    SeedOption,
    SkipBadOption,
    WeightsOption,
    check_positive,
    check_seed,
    image_files,
    load_cli_model,
    random_weights,
    skip_bad_hint,
    skip_unreadable,
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
)
from camscope.cli.pass_options import (
    CheckpointEveryOption,
    CheckpointOption,
    PrecisionOption,
    ResumeOption,
    WorkersOption,
    cli_device,
    is_main_process,
    pass_options,
)
from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from camscope.accumulators.reference_bank import ReferenceBank
    from camscope.analyses.counterfactual import CounterfactualPair
    from camscope.viz.style import FigureStyle

__all__ = ["DiffCAMOptions", "bank_app"]

bank_app = typer.Typer(
    help="Reference banks for DiffCAM: build one from an image folder, inspect, merge, counterfactual maps.",
    no_args_is_help=True,
    rich_markup_mode=None,
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


def _folder_images(folder: Path, size: int, config: Any, leave_out: list[Path]) -> tuple[Tensor, int]:
    """The images of a folder (and its class subfolders) prepared for the model, ``[N, 3, size, size]``,
    without the files of ``leave_out`` (the explained images: an example is not its own reference);
    and how many were left out."""
    import torch

    from camscope.data.folders import ImageFolderData
    from camscope.passes.batches import ImageTransform

    data = ImageFolderData(folder, transform=ImageTransform(size, config), size=size)
    explained = {path.resolve() for path in leave_out}
    kept = [(path, label) for path, label in data.samples if Path(path).resolve() not in explained]
    if not kept:
        raise CamscopeError(
            f"--reference folder:{folder} holds only the explained image(s), which are left out of their own "
            "reference group: give a folder with other images"
        )
    left_out = len(data.samples) - len(kept)
    data.samples = kept
    return torch.cat([inputs for inputs, _ in data.batches(64)]), left_out


def _model_for_bank(
    bank: ReferenceBank, model: str | None, weights: str | None, seed: int | None, device: str | None
) -> tuple[str, nn.Module, str, int]:
    """The model of a bank command: by default the bank's model, weights and seed (as ``bank build`` recorded them)."""
    built = bank.model or {}
    name = model or built.get("name") or _DEFAULT_MODEL
    same_model = model is None or model == built.get("name")
    weights_name = weights or (built.get("cli_weights") if same_model else None) or "default"
    seed_value = seed if seed is not None else int(built.get("cli_seed", 0) or 0)
    return name, load_cli_model(name, weights_name, seed_value, device), weights_name, seed_value


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
    seed: SeedOption = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
    workers: WorkersOption = 0,
    checkpoint: CheckpointOption = None,
    checkpoint_every: CheckpointEveryOption = None,
    resume: ResumeOption = False,
    precision: PrecisionOption = "fp32",
    skip_bad: SkipBadOption = False,
) -> None:
    """Build a reference bank: per-class counts, means and scatters of a layer's embeddings over a folder.

    Under torchrun the pass is split over the processes; rank 0 writes the bank."""
    from camscope.accumulators.reference_bank import ReferenceBank
    from camscope.data.folders import ImageFolderData
    from camscope.models import data_config
    from camscope.passes.batches import ImageTransform

    device = cli_device(device) or "cpu"
    _check_build_values(data, embedding, scatter, batch_size, size)
    check_seed(seed, weights)
    options = pass_options(workers, checkpoint, checkpoint_every, resume, precision)
    if is_main_process():
        claim_outputs([out], overwrite)
    network = load_cli_model(model, weights, seed, device)
    config = data_config(model)
    dataset = ImageFolderData(data, transform=ImageTransform(size, config), size=size)
    skip_unreadable(dataset, skip_bad, workers, report=is_main_process())
    with skip_bad_hint():
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
        # the bank remembers how its model was made, so that its users load the same one by default
        bank.model = {
            **(bank.model or {}),
            "cli_weights": weights,
            **({"cli_seed": seed} if random_weights(weights) else {}),
        }
        path = bank.save(out)
        _print_info(bank, path, json_output)


def _check_build_values(data: Path, embedding: str, scatter: str, batch_size: int, size: int) -> None:
    """Check the values of ``bank build``'s own flags before any model is loaded."""
    if not data.is_dir():
        raise CamscopeError(f"--data {data}: no such folder")
    if embedding not in ("mean", "cls"):
        raise CamscopeError(f"--embedding must be mean (spatial mean) or cls (class token), got {embedding!r}")
    if scatter not in ("auto", "class", "shared"):
        raise CamscopeError(f"--scatter must be auto, class or shared, got {scatter!r}")
    check_positive(batch_size=batch_size, size=size)


def _describe(bank: ReferenceBank, path: Path) -> dict[str, Any]:
    return {"file": str(path), **bank.summary()}


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
    from camscope.accumulators.reference_bank import ReferenceBank

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
    from camscope.accumulators.reference_bank import ReferenceBank

    if len(banks) < 2:
        raise CamscopeError("merge needs at least two banks")
    claim_outputs([out], overwrite)
    merged = ReferenceBank.load(banks[0])
    for path in banks[1:]:
        merged = merged.merge(ReferenceBank.load(path))
    _print_info(merged, merged.save(out), json_output)


# ----------------------------------------------------------------------------- counterfactual


_VersusOption = Annotated[str, typer.Option("--versus", help="Class d (bank label or name): 'why c, not d'.")]
_ExplainedOption = Annotated[
    str | None, typer.Option("--explained", help="Class c (default: the image's class as DiffCAM finds it).")
]
_CounterImageOption = Annotated[
    Path | None,
    typer.Option(
        "--counter-image",
        help="An image of class d for the counterpart map (default: the counterpart on IMAGE, from the mean of d).",
    ),
]
_BankModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Default: the model the bank was built with.")
]
_BankWeightsOption = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="'default', 'none' (random, seeded by --seed) or a checkpoint file (.pt/.pth state dict read with "
        "weights_only=True, or .safetensors). Default: the weights the bank was built with.",
    ),
]
_BankSeedOption = Annotated[
    int | None, typer.Option("--seed", help="Seed of random weights (default: the bank's, else 0).")
]
_PairOutOption = Annotated[
    Path,
    typer.Option(
        help="Output folder: INPUT__why-C-not-D__refs-N[__OPTION-VALUE]....png and the counterpart "
        "(COUNTER-INPUT or INPUT)__why-D-not-C__refs-N....png; existing files need --overwrite."
    ),
]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@dataclass
class _PairInputs:
    """What ``bank counterfactual`` reads: the bank, the model, the image (and the counter image) as the model sees them."""

    bank: ReferenceBank
    model_name: str
    network: nn.Module
    weights: str
    seed: int
    image: Path
    x: Tensor
    photo: Any
    counter_image: Path | None
    counter: tuple[Tensor, Any] | None

    @property
    def random(self) -> bool:
        return random_weights(self.weights)


@bank_app.command("counterfactual")
def counterfactual_command(
    image: Annotated[Path, typer.Argument(help="Image of class c.")],
    bank: BankOption,
    versus: _VersusOption,
    explained: _ExplainedOption = None,
    counter_image: _CounterImageOption = None,
    model: _BankModelOption = None,
    weights: _BankWeightsOption = None,
    seed: _BankSeedOption = None,
    regularization: RegularizationOption = "oas",
    device: DeviceOption = None,
    out: _PairOutOption = Path("camscope-out/counterfactual"),
    json_output: _JsonOption = False,
    overwrite: OverwriteOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Counterfactual pair: the map of 'why c, not d' and of its counterpart 'why d, not c'.

    Without --counter-image the counterpart is drawn on IMAGE itself, from the bank's mean of class d
    (the figure and the report say so)."""
    from camscope.analyses.counterfactual import pair_summary

    style = figure_style(fmt, dpi, cmap)
    inputs = _pair_inputs(bank, image, counter_image, model, weights, seed, cli_device(device))
    pair = _pair(inputs, versus, explained, regularization)
    summary = pair_summary(pair, inputs.bank)
    naming = [
        ("model", model),
        ("random-weights", inputs.random),
        ("seed", inputs.seed if inputs.random and inputs.seed else None),
        ("bank", bank.stem),
        ("reg", None if regularization.strip().lower() == "oas" else regularization),
    ]
    paths = _pair_paths(inputs, summary, naming, out, style.suffix)
    claim_outputs(list(paths), overwrite)
    groups = _pair_groups(inputs, summary)
    written = _draw_pair(inputs, pair, summary, groups, paths, style)
    report = _pair_report(inputs, summary, written)
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    c_name, d_name = summary["explained"]["name"], summary["versus"]["name"]
    base = inputs.counter_image or inputs.image
    for shown, question, group, note, path in [
        (inputs.image, f"why {c_name}, not {d_name}", groups[0], report.get("why_note", ""), written[0]),
        (base, f"why {d_name}, not {c_name}", groups[1], report.get("counterpart_note", ""), written[1]),
    ]:
        typer.echo(f"{shown}: {question} ({group}): {'EMPTY map: ' + note + ': ' if note else ''}wrote {path}")


def _pair_inputs(
    bank: Path,
    image: Path,
    counter_image: Path | None,
    model: str | None,
    weights: str | None,
    seed: int | None,
    device: str | None,
) -> _PairInputs:
    """Read the bank, its model (by default) and the images at the bank's input size."""
    from camscope.accumulators.reference_bank import ReferenceBank
    from camscope.models import data_config, load_photo

    loaded = ReferenceBank.load(bank)
    model_name, network, weights_name, seed_value = _model_for_bank(loaded, model, weights, seed, device)
    config = data_config(model_name)
    size = int((loaded.input_size or [224])[-1])
    image, *rest = image_files([image] + ([counter_image] if counter_image else []))
    counter_image = rest[0] if rest else None
    x, photo = load_photo(image, size=size, config=config)
    counter = load_photo(counter_image, size=size, config=config) if counter_image else None
    return _PairInputs(loaded, model_name, network, weights_name, seed_value, image, x, photo, counter_image, counter)


def _pair(inputs: _PairInputs, versus: str, explained: str | None, regularization: str) -> CounterfactualPair:
    """The counterfactual pair, its errors in the command line's words."""
    from camscope.analyses.counterfactual import counterfactual

    bank = inputs.bank
    if explained is not None and bank.label_of(explained) == bank.label_of(versus):
        raise CamscopeError(
            f"--explained and --versus are the same class {bank.class_name(bank.label_of(versus))!r}: "
            "'why c, not d' needs two different classes"
        )
    device = next(inputs.network.parameters()).device
    try:
        return counterfactual(
            inputs.network,
            inputs.x.to(device),
            bank,
            versus=versus,
            explained=explained,
            counter_inputs=inputs.counter[0].to(device) if inputs.counter else None,
            regularization=_regularization(regularization),
        )
    except CamscopeError as error:
        if "input(s) [0] are explained as class" in str(error):  # one image: say which, in the CLI's words
            name = bank.class_name(bank.label_of(versus))
            raise CamscopeError(
                f"{inputs.image} is explained as class {name!r}, the class of --versus itself: choose another "
                "--versus, or pass --explained with the class it should be explained as"
            ) from None
        raise


def _pair_paths(
    inputs: _PairInputs, summary: dict[str, Any], naming: list[tuple[str, Any]], out: Path, suffix: str
) -> tuple[Path, Path]:
    """The files of the "why" map and of its counterpart, named by image, question and reference size."""
    c, d = summary["explained"], summary["versus"]
    labels = input_labels([inputs.image, inputs.counter_image] if inputs.counter_image is not None else [inputs.image])
    why_what = f"why-{_slug(c['name'])}-not-{_slug(d['name'])}__refs-{d['count']}"
    other_what = f"why-{_slug(d['name'])}-not-{_slug(c['name'])}__refs-{c['count']}"
    return (
        out / output_name(labels[0], why_what, naming, suffix),
        out / output_name(labels[-1], other_what, naming, suffix),
    )


def _pair_groups(inputs: _PairInputs, summary: dict[str, Any]) -> tuple[str, str]:
    """The reference groups of the two maps in words (the counterpart's says when it comes from the means)."""
    c, d = summary["explained"], summary["versus"]
    why_group = f"reference group: bank class {d['name']}, {d['count']} images"
    if inputs.counter_image is not None:
        return why_group, f"reference group: bank class {c['name']}, {c['count']} images"
    return why_group, f"no --counter-image: drawn on {inputs.image.name}, mean of {d['name']} vs {c['name']} (bank)"


def _draw_pair(
    inputs: _PairInputs,
    pair: CounterfactualPair,
    summary: dict[str, Any],
    groups: tuple[str, str],
    paths: tuple[Path, Path],
    style: FigureStyle,
) -> tuple[Path, Path]:
    """Save the figures of the "why" map and of its counterpart."""
    from camscope.viz.counterfactual import counterfactual_figure
    from camscope.viz.figures import save_figure

    c_name, d_name = summary["explained"]["name"], summary["versus"]["name"]
    note = f" | random weights (seed {inputs.seed}): not a trained model" if inputs.random else ""
    layer = f"{pair.why.layer} | model {inputs.model_name}{note}"
    base, base_photo = (
        (inputs.counter_image, inputs.counter[1])
        if inputs.counter_image is not None and inputs.counter
        else (inputs.image, inputs.photo)
    )
    sides = [
        (inputs.photo, pair.why, f"why {c_name}, not {d_name}", inputs.image, summary.get("why_note", "")),
        (base_photo, pair.counterpart, f"why {d_name}, not {c_name}", base, summary.get("counterpart_note", "")),
    ]
    written = []
    for (photo, explanation, question, image, empty), group, path in zip(sides, groups, paths):
        figure = counterfactual_figure(
            photo,
            explanation,
            question=question,
            group=group,
            caption=f"{image.name}, layer {layer}",
            empty_note=empty,
            style=style,
        )
        written.append(save_figure(path, figure, style=style))
    return written[0], written[1]


def _pair_report(inputs: _PairInputs, summary: dict[str, Any], written: tuple[Path, Path]) -> dict[str, Any]:
    """The JSON report of ``bank counterfactual``: inputs, classes, files and empty maps."""
    c, d = summary["explained"], summary["versus"]
    if inputs.counter_image is not None:
        counterpart_on = str(inputs.counter_image)
    else:
        counterpart_on = f"{inputs.image} (no --counter-image: from the bank's means of {d['name']} and {c['name']})"
    notes: dict[str, Any] = {key: summary[key] for key in ("why_note", "counterpart_note") if key in summary}
    return {
        "image": str(inputs.image),
        "model": inputs.model_name,
        "weights": inputs.weights,
        **({"seed": inputs.seed} if inputs.random else {}),
        "explained": c,
        "versus": d,
        "why": str(written[0]),
        "counterpart": str(written[1]),
        "counterpart_on": counterpart_on,
        "why_empty": summary["why_empty"],
        "counterpart_empty": summary["counterpart_empty"],
        **notes,
    }


def _count(number: int, noun: str) -> str:
    """``1 image``, ``3 images``, ``1 class``, ``2 classes``."""
    plural = noun + ("es" if noun.endswith("s") else "s")
    return f"{number} {noun if number == 1 else plural}"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name.strip())[:40] or "class"


# ----------------------------------------------------------------------------- explain --method diffcam


class DiffCAMOptions:
    """What ``camscope explain --bank B --reference SPEC --regularization R`` adds for the ``diffcam`` method.

    ``--reference``: ``others``, ``all``, ``intra``, ``knn[:K]``, ``class:NAME[,NAME]``
    (with ``--bank``) or ``folder:PATH`` (the images of a folder, embedded with the
    explained model; no bank needed). ``--target`` names a bank class when the bank has it.
    The bank is read first, so that its model (and weights, seed) are the defaults;
    :meth:`prepare` then embeds a ``folder:`` reference with the model's preprocessing.
    """

    def __init__(
        self,
        bank: Path | None,
        reference: str | None,
        regularization: str | None,
        target: str | None,
        methods: list[str],
        model: str | None = None,
    ) -> None:
        self.active = "diffcam" in methods
        self.bank: ReferenceBank | None = None
        self.options: dict[str, Any] = {}
        self.target: int | None = None
        self.reference = reference
        self.folder_size = 0
        self.left_out = 0
        if not self.active:
            if bank is not None or reference is not None or regularization is not None:
                raise CamscopeError("--bank, --reference and --regularization apply to --method diffcam")
            return
        from camscope.accumulators.reference_bank import ReferenceBank

        self.bank = ReferenceBank.load(bank) if bank is not None else None
        built_with = self.built_with.get("name")
        if built_with and model and built_with.strip().lower() != model.strip().lower():
            raise CamscopeError(
                f"the bank {bank} was built with model {built_with!r}, not {model!r}: pass --model {built_with} "
                "(or leave --model out: the bank's model is the default)"
            )
        self._check_reference()
        if self.bank is not None:
            self.options["bank"] = self.bank
        if regularization is not None:
            self.options["regularization"] = _regularization(regularization)
        if target is not None and self.bank is not None:
            try:
                self.target = self.bank.label_of(target)
            except CamscopeError:
                self.target = None

    def _check_reference(self) -> None:
        """A reference group the command line can build: a folder, or a group of --bank (said in flags)."""
        spec = (self.reference or "").strip()
        kind, _, argument = spec.partition(":")
        kind = kind.strip().lower()
        from camscope.accumulators.reference_bank import GROUP_KINDS

        groups = "others, all, intra, knn:K or class:NAME"
        if not spec and self.bank is None:
            raise CamscopeError(
                "--method diffcam compares the image with a reference group: give --reference folder:PATH (the "
                f"images of a folder), or --bank FILE (camscope bank build) with --reference {groups} (default others)"
            )
        if kind == "folder" and not argument.strip():
            raise CamscopeError("--reference folder:PATH needs the folder, e.g. --reference folder:photos/")
        if spec and kind not in ("folder", *GROUP_KINDS):
            raise CamscopeError(f"unknown --reference {spec!r}: use folder:PATH, or with --bank: {groups}")
        if spec and kind != "folder" and self.bank is None:
            raise CamscopeError(
                f"--reference {spec} is a group of a reference bank: give --bank FILE (camscope bank build), "
                "or compare with the images of a folder: --reference folder:PATH"
            )

    @property
    def built_with(self) -> dict[str, Any]:
        """The bank's record of its model: ``name`` and, when built by the CLI, ``cli_weights`` and ``cli_seed``."""
        return dict((self.bank.model or {}) if self.bank is not None else {})

    def prepare(self, size: int, config: Any, explained: list[Path]) -> None:
        """The reference of ``--reference``: a ``folder:PATH`` is embedded with the model's preprocessing,
        without the ``explained`` images (an example is not part of its own reference group)."""
        if not self.active or self.reference is None:
            return
        kind, _, argument = self.reference.partition(":")
        if kind.strip().lower() == "folder":
            images, self.left_out = _folder_images(Path(argument.strip()).expanduser(), size, config, explained)
            self.folder_size = int(images.shape[0])
            self.options["reference"] = images
        else:
            self.options["reference"] = self.reference

    def describe(self, explained: int | None) -> str:
        """The reference group in words, with its size: ``others than tabby: 40 images of 2 classes``."""
        spec = (self.reference or ("others" if self.bank is not None and self.bank.is_labelled else "all")).strip()
        kind, _, argument = spec.partition(":")
        kind = kind.lower()
        if kind == "folder":
            left_out = (
                ""
                if not self.left_out
                else " (the explained image left out)"
                if self.left_out == 1
                else f" ({self.left_out} explained images left out)"
            )
            return f"folder {argument}: {_count(self.folder_size, 'image')}{left_out}"
        bank = self.bank
        if bank is None:
            return spec
        counts = dict(zip(bank.labels, bank.counts.tolist()))
        name = bank.class_name(explained) if explained is not None and explained in counts else None
        if kind == "all":
            return f"all {bank.count} images of the bank"
        if kind == "class":
            labels = [bank.label_of(part.strip()) for part in argument.split(",") if part.strip()]
            listed = ", ".join(bank.class_name(label) for label in labels)
            return f"class {listed}: {_count(sum(counts.get(label, 0) for label in labels), 'image')}"
        if kind == "intra" and name is not None and explained is not None:
            return f"its own class {name}: {_count(counts[explained], 'image')}"
        if kind == "others" and name is not None:
            others = [label for label in counts if label != explained]
            images = _count(sum(counts[label] for label in others), "image")
            return f"others than {name}: {images} of {_count(len(others), 'class')}"
        if kind == "knn":
            return (
                f"the {argument or 'k'} nearest classes of the bank "
                f"({_count(len(counts), 'class')}, {_count(bank.count, 'image')})"
            )
        return f"{spec} ({_count(bank.count, 'image')} in the bank)"

    def fixed_size(self) -> int | None:
        """The reference group's size when it does not depend on the image (folder, class, all), else None."""
        if not self.active:
            return None
        kind, _, argument = (self.reference or "").strip().partition(":")
        kind = kind.lower()
        if kind == "folder":
            return self.folder_size
        if self.bank is None:
            return None
        if kind == "all":
            return int(self.bank.count)
        if kind == "class":
            counts = dict(zip(self.bank.labels, self.bank.counts.tolist()))
            return sum(counts.get(self.bank.label_of(part.strip()), 0) for part in argument.split(",") if part.strip())
        return None

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
        return self.active and method == "diffcam"
