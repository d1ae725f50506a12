"""What the commands share: the model and weights options, loading the model, class names, and running the CLI.

A user mistake (:class:`camscope.errors.CamscopeError` or a usage error) prints one line,
``camscope: error: ...``, on stderr and exits with status 2.

Example:
    >>> import torch
    >>> from camscope.cli.common import top_predictions
    >>> top_predictions(torch.tensor([[0.0, 2.0]]), ["cat", "dog"], k=1)[0][0]["name"]
    'dog'
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.errors import CamscopeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_HELP",
    "DeviceOption",
    "JsonOption",
    "MethodOption",
    "ModelOption",
    "SeedOption",
    "SkipBadOption",
    "WeightsOption",
    "check_model_size",
    "check_positive",
    "check_seed",
    "class_names_for",
    "cli_message",
    "image_files",
    "load_cli_model",
    "method_list",
    "model_option",
    "random_weights",
    "report_skipped",
    "resolve_class",
    "run_cli",
    "seeded_random_weights",
    "skip_bad_hint",
    "skip_unreadable",
    "top_predictions",
]

MODEL_HELP = "efficientnet_lite0 (default, offline), torchvision:NAME or timm:NAME."
ModelOption = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
WeightsOption = Annotated[
    str,
    typer.Option(
        "--weights",
        help="'default' (pretrained; needs network except for the default model), 'none' (random, seeded by --seed) "
        "or a checkpoint file: a state dict saved with torch.save (.pt/.pth, read with weights_only=True) "
        "or .safetensors.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed of the random weights of --weights none (recorded in the outputs).")
]
DeviceOption = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1, mps, ... (default: cpu).")]
MethodOption = Annotated[
    list[str] | None,
    typer.Option(
        "--method",
        help="Method (default: gradcam); repeat or separate by commas for several. Spelling is forgiven: "
        "GradCAM, Grad-CAM and gradcam are gradcam (camscope methods lists them).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SkipBadOption = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Leave out the images that cannot be read (not an image, truncated) instead of stopping: each is "
        "reported on stderr with the count. Folders are read once more first, to find them.",
    ),
]
_SKIP_BAD_HINT = "pass --skip-bad to leave out the images that cannot be read (each is reported)"


def report_skipped(skipped: list[tuple[Path, str]], total: int) -> None:
    """Each image left out by ``--skip-bad`` and the count, on stderr (never silently)."""
    for path, reason in skipped:
        typer.echo(
            f"camscope: skipped: {reason}" if str(path) in reason else f"camscope: skipped {path}: {reason}", err=True
        )
    if skipped:
        typer.echo(f"camscope: skipped {len(skipped)} of {total} images that cannot be read (--skip-bad)", err=True)


def skip_unreadable(dataset: Any, skip_bad: bool, workers: int = 0, report: bool = True) -> None:
    """``--skip-bad`` on an image folder: its unreadable images are left out and reported (``report``: rank 0)."""
    if not skip_bad:
        return
    total = len(dataset.samples)
    skipped = dataset.drop_unreadable(workers)
    if report:
        report_skipped(skipped, total)


@contextmanager
def skip_bad_hint() -> Iterator[None]:
    """An image of a folder that cannot be read stops the command with its name and the ``--skip-bad`` hint."""
    from camscope.data.folders import UnreadableImageError

    try:
        yield
    except UnreadableImageError as error:
        raise CamscopeError(f"{error}; {_SKIP_BAD_HINT}") from None


def check_seed(seed: int | None, weights: str | None) -> None:
    """Refuse ``--seed`` where it changes nothing: it seeds only the random weights of ``--weights none``.

    Example:
        >>> check_seed(3, "none"), check_seed(0, "default")
        (None, None)
        >>> check_seed(3, "default")
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: --seed seeds the random weights of --weights none; with --weights default it changes nothing: drop --seed, or add --weights none
    """
    if seed and not random_weights(weights):
        raise CamscopeError(
            f"--seed seeds the random weights of --weights none; with --weights {weights} it changes nothing: "
            "drop --seed, or add --weights none"
        )


def check_model_size(model: str, size: int) -> None:
    """Refuse a ``--size`` that camscope's scene models cannot take (sides multiples of 16), before loading them.

    Example:
        >>> check_model_size("camscope:scenes-detector", 112), check_model_size("resnet18", 100)
        (None, None)
        >>> check_model_size("camscope:scenes-segmenter", 100)
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: --size 100: camscope:scenes-segmenter takes image sides that are multiples of 16 (its own size is 96): use --size 96 or 112, or leave --size out
    """
    from camscope.models.scene_models import SIDE_MULTIPLE
    from camscope.models.scene_zoo import SCENE_MODELS, scene_model_info

    name = model.strip().lower().removeprefix("camscope:")
    if not model.strip().lower().startswith("camscope:") or name not in SCENE_MODELS or size % SIDE_MULTIPLE == 0:
        return
    own = int(scene_model_info(name)["input"]["size"])
    below = max(SIDE_MULTIPLE, size - size % SIDE_MULTIPLE)
    raise CamscopeError(
        f"--size {size}: {model.strip()} takes image sides that are multiples of {SIDE_MULTIPLE} (its own size is "
        f"{own}): use --size {below} or {below + SIDE_MULTIPLE}, or leave --size out"
    )


def check_positive(**flags: int | None) -> None:
    """Refuse a count flag below 1 (``batch_size=`` is ``--batch-size``; None means not given).

    Example:
        >>> check_positive(batch_size=4, size=None)
        >>> check_positive(size=0)
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: --size must be a positive integer, got 0
    """
    for name, value in flags.items():
        if value is not None and value < 1:
            raise CamscopeError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def random_weights(weights: str | None) -> bool:
    """``--weights none``: a randomly initialised model."""
    return weights is not None and str(weights).strip().lower() == "none"


def load_cli_model(model: str, weights: str, seed: int = 0, device: str | None = None) -> torch.nn.Module:
    """The model named on the command line (``--weights none``: randomly initialised from ``seed``).

    Random weights are drawn on the CPU from a generator forked from the process's and seeded with
    ``seed``, so they are the same on every run and every torchrun rank whatever the process drew
    before, and the caller's random state is left as it was.
    """
    from camscope.models import load_model

    if not random_weights(weights):
        return load_model(model, weights=weights, device=device)
    with seeded_random_weights(weights, seed):
        network = load_model(model, weights=None)
    return network.to(device) if device is not None else network


@contextmanager
def seeded_random_weights(weights: str | None, seed: int) -> Iterator[None]:
    """Inside: with ``--weights none``, the process's random state forked and seeded with ``seed``.

    Models built inside get the same random weights on every run and rank, whatever was drawn
    before; on leaving, the random state is the caller's again.
    """
    if not random_weights(weights):
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def model_option(option: str | None, argument: str | None, default: str = "efficientnet_lite0") -> str:
    """``--model``, or the model given the old way, as a positional argument (still accepted, not shown)."""
    if option is not None and argument is not None and option != argument:
        raise CamscopeError(f"give the model once, as --model {option} (also got {argument!r} as an argument)")
    return option or argument or default


def image_files(paths: list[Path]) -> list[Path]:
    """The images of ``camscope explain``: files as given, folders as their images (sorted, sub-folders included)."""
    from camscope.data.folders import IMAGE_SUFFIXES

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise CamscopeError(
                    f"{path} is a folder with no images ({', '.join(IMAGE_SUFFIXES)}): give image files"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CamscopeError(f"no such image file or folder: {path}")
    return files


def method_list(values: list[str] | None, default: str = "gradcam") -> list[str]:
    """The methods of ``--method A --method B,C``: split at commas, canonical names, each once.

    Example:
        >>> method_list(["GradCAM,layercam", "Grad-CAM"])
        ['gradcam', 'layercam']
    """
    from camscope.engine.method import canonical_method_name

    parts = [part.strip() for value in values or [default] for part in value.split(",") if part.strip()]
    if not parts:
        raise CamscopeError("--method needs a method name (camscope methods lists them)")
    return list(dict.fromkeys(canonical_method_name(part) for part in parts))


def class_names_for(model: torch.nn.Module, num_classes: int) -> list[str]:
    """The model's own ``class_names`` (camscope's shipped models), ImageNet names for 1000-class models, else ``class i``."""
    from camscope.models import imagenet_classes

    own = getattr(model, "class_names", None)
    if isinstance(own, list) and len(own) == num_classes and all(isinstance(name, str) for name in own):
        return list(own)
    return imagenet_classes() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]


def top_predictions(logits: torch.Tensor, names: list[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Top-k classes per sample: index, name, probability."""
    probabilities = logits.softmax(dim=1)
    values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return [
        [{"class": int(i), "name": names[int(i)], "probability": float(p)} for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(values, indices)
    ]


def resolve_class(spec: str, num_classes: int) -> int:
    """A class given by index or (ImageNet) name."""
    from camscope.models import class_index

    return class_index(spec, num_classes)


def run_cli(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run ``app``; a user mistake prints one line on stderr and returns status 2.

    Ctrl-C prints ``camscope: interrupted`` and returns 130 (files are written
    atomically, so none is left half-written); an operating-system error (a
    missing, unreadable or unwritable file) prints one line and returns 2.

    Returns:
        The exit status: 0 on success (and for the help of a bare command), 1 when aborted,
        2 for a user mistake or a file that cannot be read or written, 130 when
        interrupted, or the status a command exits with.
    """
    from camscope.progress import log_off_terminal

    log_off_terminal()  # long steps report progress as plain lines when stderr is not a terminal
    try:
        return _run(app, argv)
    finally:
        log_off_terminal(False)


def _run(app: typer.Typer, argv: list[str] | None) -> int:
    try:
        # Without standalone mode, typer returns the status of a command that exits early,
        # and turns Ctrl-C into status 130.
        status = app(args=argv, standalone_mode=False)
    except CamscopeError as error:
        typer.echo(f"camscope: error: {cli_message(str(error), _flags(app))}", err=True)
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    except typer.Exit as exit_:
        if isinstance(exit_.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130)
            return _interrupted()
        return exit_.exit_code
    except typer.Abort as abort:
        if isinstance(abort.__cause__, KeyboardInterrupt):
            return _interrupted()
        typer.echo("camscope: aborted", err=True)
        return 1
    except OSError as error:
        typer.echo(f"camscope: error: {_os_error(error)}", err=True)
        return 2
    except Exception as error:
        # Usage errors of click (or of the click that typer vendors): one line, status 2.
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # the help is already printed
            return 0
        typer.echo(f"camscope: error: {error.format_message()}", err=True)
        return 2
    if isinstance(status, int) and not isinstance(status, bool) and status:
        return _interrupted() if status == 130 else status
    return 0


#: API keywords whose command-line flag has another name.
_KEYWORD_FLAGS = {"features": "--principal", "counter_inputs": "--counter-image", "weights": "--weights"}
_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True|False|'[^']*'|\"[^\"]*\"|[\w.:-]+)?")
_CALL = re.compile(r"\b(?:camscope\.)?([a-z][a-z_]*)\(\.\.\.,\s*([^()]*)\)")


def cli_message(text: str, flags: set[str]) -> str:
    """An API error in the command line's words: ``name=VALUE`` keywords become ``--name VALUE`` flags.

    Only keywords that are flags of the CLI (``flags``) are translated; ``analyze(..., k=v)`` reads
    ``camscope analyze ... --k v``.

    Example:
        >>> cli_message("no Eq. 3 matrix: run analyze(..., all_classes=True)", {"--all-classes"})
        'no Eq. 3 matrix: run camscope analyze ... --all-classes'
        >>> cli_message("use regularization='oas' (default)", {"--regularization"})
        'use --regularization oas (default)'
    """

    def keyword(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        flag = _KEYWORD_FLAGS.get(name, "--" + name.replace("_", "-"))
        if flag not in flags:
            return match.group(0)
        if value is None or value == "True":
            return flag
        if value == "False":
            return f"--no-{flag[2:]}" if f"--no-{flag[2:]}" in flags else match.group(0)
        return f"{flag} {value.strip(chr(39) + chr(34))}"

    text = _CALL.sub(lambda match: f"camscope {match.group(1)} ... {match.group(2)}", text)
    return _KEYWORD.sub(keyword, text)


def _flags(app: typer.Typer) -> set[str]:
    """Every option name of the app's commands (for :func:`cli_message`)."""
    flags: set[str] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            flags.update(name for name in (*param.opts, *param.secondary_opts) if name.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    try:
        walk(typer.main.get_command(app))
    except Exception:  # noqa: BLE001 - the translation is a courtesy: never hide the error behind another
        return set()
    return flags


def _interrupted() -> int:
    typer.echo("camscope: interrupted", err=True)
    return 130


def _os_error(error: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to check."""
    reason = error.strerror or str(error) or type(error).__name__
    where = f": {error.filename}" if error.filename else ""
    return f"{reason}{where} (check that the path exists and can be read or written)"
