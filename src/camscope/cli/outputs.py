"""Output files of the commands: names that say what they hold, and no silent replacement.

Every command that writes files names them with :func:`output_name`::

    <input>__<what>[__<option>-<value>]...<suffix>

``<input>`` is the input's path with ``/`` replaced by ``__``, shortened to the fewest trailing
parts that tell the command's inputs apart (``test/tabby/0.jpg`` and ``test/espresso/0.jpg``
give ``tabby__0.jpg`` and ``espresso__0.jpg``; the suffix stays, so ``gray.png`` and ``gray.jpg``
differ); ``<what>`` is the method (several joined by ``+``) or the kind of output; each option
that changes the result and is not at its default adds ``__<option>-<value>`` (``__target-tabby``,
``__vs-tabby+lynx``, ``__gamma-1``, ``__ref-class-tabby``, ``__scaled-analysis``,
``__principal-0.05``, ...). Before writing anything a command calls :func:`claim_outputs` with all
its files: two outputs of one run with the same name, or a file that already exists (without
``--overwrite``), stop the command with a :class:`~camscope.errors.CamscopeError` (exit status 2)
before any file is written.

Example:
    >>> from pathlib import Path
    >>> labels = input_labels([Path("test/tabby/0.jpg"), Path("test/espresso/0.jpg")])
    >>> output_name(labels[0], "gradcam", [("target", "tiger cat"), ("gamma", None)])
    'tabby__0.jpg__gradcam__target-tiger-cat.png'
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from camscope.errors import CamscopeError

if TYPE_CHECKING:
    from camscope.viz.style import FigureStyle

__all__ = [
    "NAMING_HELP",
    "CmapOption",
    "DpiOption",
    "FormatOption",
    "OverwriteOption",
    "claim_outputs",
    "figure_style",
    "input_labels",
    "output_name",
    "plot_style",
    "slug",
]

OverwriteOption = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace output files that already exist (without it: an error, exit status 2, nothing written).",
    ),
]

# The figure options of every command that draws (camscope.viz.style.FigureStyle).
FormatOption = Annotated[
    str, typer.Option("--format", help="File format of the figures: png, pdf or svg (the file suffix follows).")
]
DpiOption = Annotated[int, typer.Option("--dpi", help="Resolution of the figures in dots per inch (20-1200).")]
CmapOption = Annotated[
    str | None,
    typer.Option(
        "--cmap",
        help="Colour map of [0, 1] maps: any matplotlib name, e.g. turbo, viridis, inferno (default jet); "
        "signed maps (S-CAMs, differences) stay red-blue.",
    ),
]


def figure_style(fmt: str = "png", dpi: int = 100, cmap: str | None = None) -> FigureStyle:
    """The :class:`~camscope.viz.style.FigureStyle` of ``--format``, ``--dpi`` and ``--cmap``.

    Example:
        >>> figure_style("PDF", 300).suffix
        '.pdf'
    """
    from camscope.viz.style import FigureStyle

    return FigureStyle(format=fmt, dpi=dpi, cmap=cmap)  # its errors name format=, dpi=, cmap=: run_cli says --format...


def plot_style(command: str, fmt: str = "png", dpi: int = 100, cmap: str | None = None) -> FigureStyle:
    """The style of a command that draws plots but no [0, 1] maps (``analyze``, ``evaluate``): ``--cmap`` is refused.

    Example:
        >>> plot_style("evaluate", "svg").suffix
        '.svg'
        >>> plot_style("evaluate", cmap="viridis")
        Traceback (most recent call last):
        ...
        camscope.errors.CamscopeError: camscope evaluate draws no [0, 1] maps (its plots are curves and signed matrices, always red-blue), so --cmap viridis would change nothing: drop --cmap
    """
    if cmap is not None:
        raise CamscopeError(
            f"camscope {command} draws no [0, 1] maps (its plots are curves and signed matrices, always red-blue), "
            f"so --cmap {cmap} would change nothing: drop --cmap"
        )
    return figure_style(fmt, dpi)


#: The naming scheme, for the commands' help.
NAMING_HELP = (
    "Files are named INPUT__METHOD[__OPTION-VALUE]...: INPUT is the image's path with / as __ "
    "(the fewest trailing parts that tell the inputs apart, suffix kept), METHOD the method(s) joined by +, "
    "and each option that changes the maps adds __OPTION-VALUE (target, vs, gamma, references, ref, refs, reg, "
    "bank, layer, model, random-weights, seed, weights, size, scaled, principal). Existing files are never replaced "
    "without --overwrite."
)

_LONGEST = 48


def slug(value: Any, longest: int = _LONGEST) -> str:
    """``value`` as a file-name part: letters, digits and ``-_.+`` kept, the rest ``-``; long ones shortened with a hash.

    Example:
        >>> slug("tiger cat"), slug(["tabby", "lynx"]), slug(0.6)
        ('tiger-cat', 'tabby+lynx', '0.6')
    """
    if isinstance(value, (list, tuple)):
        text = "+".join(slug(item) for item in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.+" else "-" for ch in text.strip()).strip(".") or "none"
    if len(cleaned) > longest:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: longest - 9]}-{digest}"
    return cleaned


def input_labels(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """One name part per input: the fewest trailing path parts (joined by ``__``) that tell the inputs apart.

    The same file given twice is a mistake (its outputs would collide).
    """
    resolved = [Path(path).expanduser().resolve() for path in paths]
    seen: dict[Path, Path] = {}
    for given, full in zip(paths, resolved):
        if full in seen:
            again = "" if str(seen[full]) == str(given) else f" (as {seen[full]} too)"
            raise CamscopeError(f"{given} is given twice{again}: give each input once")
        seen[full] = Path(given)
    labels = []
    for full in resolved:
        parts = [part if part not in ("", "/") else "root" for part in full.parts]
        depth = 1
        while depth < len(parts) and any(
            other != full and list(other.parts[-depth:]) == parts[-depth:] for other in resolved
        ):
            depth += 1
        labels.append("__".join(slug(part) for part in parts[-depth:]))
    return labels


def output_name(
    label: str, what: str | Sequence[str], options: Iterable[tuple[str, Any]] = (), suffix: str = ".png"
) -> str:
    """``<label>__<what>[__<option>-<value>]...<suffix>``; options that are None, False or empty are left out, True ones add ``__<option>``."""
    parts = [label, slug(what, longest=120)]
    for key, value in options:
        if value is None or value is False or (isinstance(value, (list, tuple, str)) and len(value) == 0):
            continue
        parts.append(key if value is True else f"{key}-{slug(value)}")
    name = "__".join(parts)
    if len(name) + len(suffix) > 200:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:180]}-{digest}"
    return name + suffix


def claim_outputs(paths: Iterable[Path], overwrite: bool) -> list[Path]:
    """Check every output of a command before it writes any.

    Raises:
        CamscopeError: if two outputs share a path, an output path is a folder, or (without
            ``overwrite``) a file already exists, or a folder they go into cannot be written.
    """
    planned = [Path(path) for path in paths]
    seen: set[Path] = set()
    for path in planned:
        key = path.expanduser().resolve()
        if key in seen:
            raise CamscopeError(
                f"two outputs of this command would both be written to {path}: give inputs or options "
                "that tell them apart"
            )
        seen.add(key)
    folders = [path for path in planned if path.is_dir()]
    if folders:
        raise CamscopeError(f"output {folders[0]} is a folder: choose another --out")
    for path in planned:
        blocking = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
        if blocking is not None:
            raise CamscopeError(f"{blocking} is a file, not a folder: choose another --out for {path.name}")
    _check_writable(planned)
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        listed = ", ".join(str(path) for path in existing[:3]) + (
            f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        )
        raise CamscopeError(
            f"{listed} already exist{'s' if len(existing) == 1 else ''}: pass --overwrite to replace "
            f"{'it' if len(existing) == 1 else 'them'}, or choose another --out; nothing was written"
        )
    return planned


def _check_writable(paths: list[Path]) -> None:
    """Raise unless a file can be made in the folder each path goes into (its nearest folder that exists).

    A file is made there and removed at once: permissions alone do not say it (root passes every
    check, and some file systems, such as ``/proc``, refuse new files whatever their modes).
    """
    import tempfile

    folders = {next(parent for parent in path.expanduser().absolute().parents if parent.exists()) for path in paths}
    for folder in sorted(folders):
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise CamscopeError(
                f"cannot write into {folder} ({reason}): choose another --out; nothing was written"
            ) from None
