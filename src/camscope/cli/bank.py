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
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.cli.common import (
    DeviceOption,
    SeedOption,
    SkipBadOption,
    WeightsOption,
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

    from camscope.stats.reference_bank import ReferenceBank

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
    from camscope.data.folders import ImageFolderData
    from camscope.models import data_config
    from camscope.passes.batches import ImageTransform
    from camscope.stats.reference_bank import ReferenceBank

    device = cli_device(device) or "cpu"
    if is_main_process():
        claim_outputs([out], overwrite)
    options = pass_options(workers, checkpoint, checkpoint_every, resume, precision)
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
    from camscope.stats.reference_bank import ReferenceBank

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
    from camscope.stats.reference_bank import ReferenceBank

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
        Path | None,
        typer.Option(
            "--counter-image",
            help="An image of class d for the counterpart map (default: the counterpart on IMAGE, from the mean of d).",
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Default: the model the bank was built with.")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help="'default', 'none' (random, seeded by --seed) or a checkpoint file (.pt/.pth state dict read with "
            "weights_only=True, or .safetensors). Default: the weights the bank was built with.",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of random weights (default: the bank's, else 0).")
    ] = None,
    regularization: RegularizationOption = "oas",
    device: DeviceOption = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: INPUT__why-C-not-D__refs-N[__OPTION-VALUE]....png and the counterpart "
            "(COUNTER-INPUT or INPUT)__why-D-not-C__refs-N....png; existing files need --overwrite."
        ),
    ] = Path("camscope-out/counterfactual"),
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    overwrite: OverwriteOption = False,
    fmt: FormatOption = "png",
    dpi: DpiOption = 100,
    cmap: CmapOption = None,
) -> None:
    """Counterfactual pair: the map of 'why c, not d' and of its counterpart 'why d, not c'.

    Without --counter-image the counterpart is drawn on IMAGE itself, from the bank's mean of class d
    (the figure and the report say so)."""
    from camscope.analyses.counterfactual import counterfactual
    from camscope.models import data_config, load_photo
    from camscope.stats.reference_bank import ReferenceBank

    device = cli_device(device)
    style = figure_style(fmt, dpi, cmap)
    loaded = ReferenceBank.load(bank)
    model_name, network, weights_name, seed_value = _model_for_bank(loaded, model, weights, seed, device)
    config = data_config(model_name)
    size = int((loaded.input_size or [224])[-1])
    image, *rest = image_files([image] + ([counter_image] if counter_image else []))
    counter_image = rest[0] if rest else None
    device_of = next(network.parameters()).device
    x, photo = load_photo(image, size=size, config=config)
    counter = load_photo(counter_image, size=size, config=config) if counter_image else None
    if explained is not None and loaded.label_of(explained) == loaded.label_of(versus):
        raise CamscopeError(
            f"--explained and --versus are the same class {loaded.class_name(loaded.label_of(versus))!r}: "
            "'why c, not d' needs two different classes"
        )
    try:
        pair = counterfactual(
            network,
            x.to(device_of),
            loaded,
            versus=versus,
            explained=explained,
            counter_inputs=counter[0].to(device_of) if counter else None,
            regularization=_regularization(regularization),
        )
    except CamscopeError as error:
        if "input(s) [0] are explained as class" in str(error):  # one image: say which, in the CLI's words
            name = loaded.class_name(loaded.label_of(versus))
            raise CamscopeError(
                f"{image} is explained as class {name!r}, the class of --versus itself: choose another --versus, "
                f"or pass --explained with the class it should be explained as"
            ) from None
        raise
    c, d = int(pair.explained[0]), pair.versus
    c_name, d_name = loaded.class_name(c), loaded.class_name(d)
    counts = dict(zip(loaded.labels, loaded.counts.tolist()))
    base, base_photo = (counter_image, counter[1]) if counter_image is not None and counter else (image, photo)
    labels = input_labels([image, counter_image] if counter_image is not None else [image])
    random = random_weights(weights_name)
    naming = [
        ("model", model),
        ("random-weights", random),
        ("seed", seed_value if random and seed_value else None),
        ("bank", bank.stem),
        ("reg", None if regularization.strip().lower() == "oas" else regularization),
    ]
    why_what = f"why-{_slug(c_name)}-not-{_slug(d_name)}__refs-{counts.get(d, 0)}"
    other_what = f"why-{_slug(d_name)}-not-{_slug(c_name)}__refs-{counts.get(c, 0)}"
    why_path = out / output_name(labels[0], why_what, naming, style.suffix)
    other_path = out / output_name(labels[-1], other_what, naming, style.suffix)
    claim_outputs([why_path, other_path], overwrite)
    note = f" | random weights (seed {seed_value}): not a trained model" if random else ""
    layer = f"{pair.why.layer} | model {model_name}{note}"
    why_group = f"reference group: bank class {d_name}, {counts.get(d, 0)} images"
    if counter_image is not None:
        other_group = f"reference group: bank class {c_name}, {counts.get(c, 0)} images"
        counterpart_on = str(counter_image)
    else:
        other_group = f"no --counter-image: drawn on {image.name}, mean of {d_name} vs {c_name} (bank)"
        counterpart_on = f"{image} (no --counter-image: from the bank's means of {d_name} and {c_name})"
    why, why_empty = _draw(photo, pair.why, (c_name, d_name), image, layer, why_group, why_path, style)
    other, other_empty = _draw(
        base_photo, pair.counterpart, (d_name, c_name), base, layer, other_group, other_path, style
    )
    report = {
        "image": str(image),
        "model": model_name,
        "weights": weights_name,
        **({"seed": seed_value} if random else {}),
        "explained": {"label": c, "name": c_name, "count": counts.get(c, 0)},
        "versus": {"label": d, "name": d_name, "count": counts.get(d, 0)},
        "why": str(why),
        "counterpart": str(other),
        "counterpart_on": counterpart_on,
        "why_empty": bool(why_empty),
        "counterpart_empty": bool(other_empty),
        **({"why_note": why_empty} if why_empty else {}),
        **({"counterpart_note": other_empty} if other_empty else {}),
    }
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    for shown, question, group, note, path in [
        (image, f"why {c_name}, not {d_name}", why_group, why_empty, why),
        (base, f"why {d_name}, not {c_name}", other_group, other_empty, other),
    ]:
        typer.echo(f"{shown}: {question} ({group}): {'EMPTY map: ' + note + ': ' if note else ''}wrote {path}")


def _draw(
    photo: Any,
    explanation: Any,
    names: tuple[str, str],
    image: Path,
    layer: str,
    group: str,
    path: Path,
    style: Any = None,
) -> tuple[Path, str]:
    """Save the figure of one map of the pair ("why names[0], not names[1]"); the file and the note of an empty map."""
    from camscope.viz.figures import save_figure

    note = _empty_note(explanation, *names)
    title = f"why {names[0]}, not {names[1]}"
    figure = _pair_figure(photo, explanation, title, image, layer, group, note, style)
    return save_figure(path, figure, style=style), note


def _empty_note(explanation: Any, c_name: str, d_name: str) -> str:
    """For an empty map (no positive cell in its raw map), what it means and what the figure shows; else ''."""
    from camscope.analyses.counterfactual import empty_maps

    if not bool(empty_maps(explanation)[0]):
        return ""
    raw = explanation.raw[0]
    negative, cells = int((raw < 0).sum()), raw.numel()
    return (
        f"the raw map is negative in {negative} of {cells} cells{'' if negative == cells else ' (the rest 0)'}: "
        f"nothing here argues for {c_name} against {d_name}; the figure shows the signed raw map (blue: against)"
    )


def _pair_figure(
    photo: Any, explanation: Any, title: str, image: Path, layer: str, group: str, empty: str = "", style: Any = None
) -> Any:
    """One DiffCAM counterfactual map over its image, titled with the question, the group, the image and the layer.

    An empty map (``empty``: why) is drawn as its signed raw map on a diverging scale, and the title says so.
    """
    from camscope.analyses.counterfactual import signed_maps
    from camscope.viz.figures import colorbar, new_figure, overlay
    from camscope.viz.style import MIN_FONT, wrap

    figure = new_figure((4.6, 4.8 if empty else 4.6))
    axis = figure.add_subplot()
    cmap = style.cmap if style is not None else None
    if empty:  # nothing for: the signed raw map, on the diverging scale of signed maps
        axis.imshow(overlay(photo, signed_maps(explanation)[0], signed=True))
        parts = [f"DiffCAM: {title}", "EMPTY map: no cell argues for it; shown: the signed raw map"]
    else:
        axis.imshow(overlay(photo, explanation.maps[0], cmap=cmap))
        parts = [f"DiffCAM: {title}"]
    text = "\n".join(wrap(part, 48, lines=2) for part in (*parts, group, f"{image.name}, layer {layer}"))
    axis.set_title(text, fontsize=MIN_FONT)
    axis.axis("off")
    if empty:
        colorbar(figure, axis, signed=True, label="raw map / max |raw|")
    else:
        colorbar(figure, axis, cmap=cmap)
    return figure


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
        from camscope.stats.reference_bank import ReferenceBank

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
        from camscope.stats.reference_bank import GROUP_KINDS

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
