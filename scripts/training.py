"""What the scripts that train the shipped models share: the optimisation loop, the log, the recipe's record, the CLI.

Every shipped model trains the same way: AdamW and a one-cycle learning-rate schedule over the recipe's
epochs, the training examples reshuffled each epoch by a generator seeded with the recipe's seed (the same
generator then draws the augmentations, in the order each script's step asks for them), so that the same
torch version and thread count give the same weights. The scripts differ in their data, model, loss and
scores; each passes its own step and end-of-epoch report to :func:`fit`.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camscope.io import save_tensors

__all__ = [
    "ASSETS",
    "Notes",
    "add_common_arguments",
    "batched",
    "coin_flips",
    "command_line",
    "echo",
    "fit",
    "main_over_recipes",
    "mirrored",
    "parse_and_prepare",
    "record",
    "save_model",
    "with_overrides",
]

#: Where the shipped weights live.
ASSETS = Path(__file__).resolve().parents[1] / "src" / "camscope" / "assets" / "models"

#: One optimisation step: the batch's indices and the augmentation generator give the loss and what the
#: epoch's report sums (numbers, added up over the epoch's steps).
Step = Callable[[Tensor, torch.Generator], tuple[Tensor, dict[str, float]]]
#: The end of an epoch: its index, the sums of its steps' numbers and a clock (seconds since training started).
EpochEnd = Callable[[int, dict[str, float], Callable[[], float]], None]


class Notes:
    """A log that also keeps its lines: they go into the weights file's metadata."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.lines: list[str] = []
        self._log = log

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        self._log(message)


def echo(message: str) -> None:
    """Print a log line at once (a long training shows its progress)."""
    print(message, flush=True)


def fit(model: nn.Module, recipe: dict[str, Any], count: int, step: Step, pct_start: float, end: EpochEnd) -> float:
    """Train ``model`` on ``count`` examples by ``recipe`` (epochs, batch_size, lr, weight_decay, seed); the seconds.

    AdamW with a one-cycle schedule (peak ``recipe["lr"]``, warm-up share ``pct_start``), one step per batch
    of a fresh permutation each epoch; ``step`` computes each batch's loss, ``end`` reports each epoch.
    """
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = math.ceil(count / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=epochs * steps, pct_start=pct_start
    )
    generator = torch.Generator().manual_seed(recipe["seed"])
    started = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - started

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(count, generator=generator)
        sums: dict[str, float] = {}
        for index in range(steps):
            loss, numbers = step(order[index * batch_size : (index + 1) * batch_size], generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            for key, value in numbers.items():
                sums[key] = sums.get(key, 0) + value
        end(epoch, sums, elapsed)
    return elapsed()


def coin_flips(count: int, generator: torch.Generator) -> Tensor:
    """``count`` fair coin flips (``[count]`` bool): which images of a batch to mirror."""
    return torch.rand(count, generator=generator) < 0.5


def mirrored(images: Tensor, mirror: Tensor) -> Tensor:
    """``images`` ``[N, C, H, W]`` with those where ``mirror`` ``[N]`` is true mirrored left to right."""
    return torch.where(mirror[:, None, None, None], images.flip(-1), images)


def batched(fn: Callable[[Tensor], Any], inputs: Tensor, size: int = 256) -> list[Any]:
    """``fn`` on ``inputs`` in chunks of ``size`` along the first dimension (evaluation without a large batch)."""
    return [fn(inputs[start : start + size]) for start in range(0, len(inputs), size)]


def record(
    recipe: dict[str, Any],
    pct_start: float,
    augmentation: dict[str, Any],
    seconds: tuple[float, float],
    script: str,
    command: str,
    log: list[str],
    head: dict[str, Any] | None = None,
    tail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata's ``training`` entry: the recipe, the (data, training) ``seconds``, the software and the log.

    ``head`` comes after the epochs and batch size, ``tail`` after the seed.
    """
    return {
        "epochs": recipe["epochs"],
        "batch_size": recipe["batch_size"],
        **(head or {}),
        "optimizer": "AdamW",
        "lr": recipe["lr"],
        "schedule": f"OneCycleLR(pct_start={pct_start})",
        "weight_decay": recipe["weight_decay"],
        "augmentation": augmentation,
        "seed": recipe["seed"],
        **(tail or {}),
        "data_seconds": round(seconds[0], 1),
        "train_seconds": round(seconds[1], 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "script": script,
        "command": command,
        "log": log,
    }


def add_common_arguments(parser: argparse.ArgumentParser, train_size_help: str) -> None:
    """``--threads``, ``--out``, ``--epochs`` and ``--train-size``, the flags every training script takes."""
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine one thread is faster than two)",
    )
    parser.add_argument("--out", type=Path, default=ASSETS, help=f"output folder (default {ASSETS})")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (experiments)")
    parser.add_argument("--train-size", type=int, default=None, help=train_size_help)


def parse_and_prepare(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed flags; torch set to the thread count and to deterministic algorithms."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    return args


def with_overrides(recipe: dict[str, Any], args: argparse.Namespace, train_size: bool = True) -> dict[str, Any]:
    """A copy of ``recipe`` with ``--epochs`` and (where ``train_size``) ``--train-size`` applied."""
    recipe = {**recipe, "data": dict(recipe["data"])}
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    if train_size and args.train_size is not None:
        recipe["data"]["train_size"] = args.train_size
    return recipe


def command_line(base: str, args: argparse.Namespace) -> str:
    """``base`` and the flags that differ from their defaults: the command that makes the same file."""
    return base + "".join(
        f" --{flag} {value}"
        for flag, value, default in (
            ("threads", args.threads, 1),
            ("epochs", args.epochs, None),
            ("train-size", args.train_size, None),
        )
        if value != default
    )


def main_over_recipes(
    description: str,
    argv: list[str] | None,
    recipes: dict[str, dict[str, Any]],
    train: Callable[..., tuple[nn.Module, dict[str, Any]]],
    kind: str,
    script: str,
    train_size_help: str,
    resizable: Callable[[str], bool] = lambda _name: True,
) -> int:
    """The command line of a script that trains the models of ``recipes`` (all, or those named by ``--only``).

    Each model is trained by ``train(name, recipe, log=..., command=...)`` and written to ``--out`` as a file of
    ``kind``; ``--train-size`` applies to the models for which ``resizable(name)`` holds.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(recipes), action="append", help="train only this model (repeatable)")
    add_common_arguments(parser, train_size_help)
    args = parse_and_prepare(parser, argv)
    for name in args.only or sorted(recipes):
        recipe = with_overrides(recipes[name], args, train_size=resizable(name))
        model, metadata = train(name, recipe, log=echo, command=command_line(f"python {script} --only {name}", args))
        save_model(args.out, name, model, metadata, kind)
    return 0


def save_model(folder: Path, name: str, model: nn.Module, metadata: dict[str, Any], kind: str) -> Path:
    """Write ``folder/name.safetensors`` (weights and metadata) and say where."""
    path = save_tensors(folder / f"{name}.safetensors", model.state_dict(), metadata, kind=kind)
    echo(f"[{name}] wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return path
