"""Train the small image-text model shipped in camscope/assets/models/species-clip.safetensors, on a CPU.

Usage:
    .venv/bin/python scripts/train_species_clip.py
    .venv/bin/python scripts/train_species_clip.py --threads 2 --out /tmp/models

Data: synthetic species (``camscope.data.synthetic``) at the ``easy`` level (the generator's
defaults, so every attribute is named exactly) with 240 species, so that the attributes of
the parts vary far more independently of each other than among 16 classes. Each training
image gets one random true caption per epoch (``camscope.models.small_clip.random_captions``);
the loss is SigLIP's pairwise sigmoid loss against the truth of *every* caption of the batch
for every image of the batch (``caption_truth``). Seeded and deterministic as far as torch allows
on a CPU (``torch.use_deterministic_algorithms``).

The file holds the weights and JSON metadata: architecture, data (generator and seeds), the
test accuracies (zero-shot species accuracy over the 240 full descriptions; colour naming per
part), the training recipe, command, seed and per-epoch log.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import training
from torch import Tensor

from camscope.data.synthetic import PARTS, SyntheticSpecies
from camscope.models.small_clip import (
    COLOURS,
    Phrase,
    SpeciesCLIP,
    caption_text,
    caption_truth,
    random_captions,
    siglip_loss,
)

#: ``kind`` of the safetensors file (camscope.models.zoo.IMAGE_TEXT_KIND).
KIND = "camscope.image_text_model"

RECIPE: dict[str, Any] = {
    "architecture": {"dim": 64, "stages": [[32], [64, 64]], "stem_stride": 2, "text_width": 64},
    "data": {
        "generator": {"num_classes": 240, "size": 64, "seed": 0},
        "train_seed": 1,
        "train_size": 8192,
        "test_seed": 2,
        "test_size": 2048,
    },
    "epochs": 12,
    "batch_size": 128,
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "flip": True,
    "seed": 0,
}


def full_description(species: SyntheticSpecies, c: int) -> list[Phrase]:
    """Every part of class ``c`` with all its attributes: the caption of the zero-shot classifier."""
    style = species.describe(c)
    phrases = []
    for part in PARTS:
        shape = style[part]["shape"]
        pattern = style[part]["pattern"] if part in ("body", "wing", "tail") else None
        phrases.append(
            Phrase(part, style[part]["colour"], pattern, None if (part, shape) == ("head", "plain") else shape)
        )
    return phrases


@torch.no_grad()
def evaluate(model: SpeciesCLIP, species: SyntheticSpecies, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Zero-shot species accuracy (240 full descriptions) and colour-naming accuracy per part (10 colours)."""
    model.eval()
    embeddings = torch.cat(training.batched(model.encode_image, images))
    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)

    def text(captions: list[str]) -> Tensor:
        return torch.nn.functional.normalize(model.encode_text(model.tokenizer(captions)), dim=-1)

    classes = text([caption_text(full_description(species, c)) for c in range(species.num_classes)])
    result = {"zero_shot_accuracy": float(((embeddings @ classes.T).argmax(1) == labels).float().mean())}
    truth_colours = torch.tensor(
        [[COLOURS.index(species.describe(c)[part]["colour"]) for part in PARTS] for c in range(species.num_classes)]
    )[labels]
    for p, part in enumerate(PARTS):
        named = text([f"{colour} {part}" for colour in COLOURS])
        result[f"colour_accuracy_{part}"] = float(
            ((embeddings @ named.T).argmax(1) == truth_colours[:, p]).float().mean()
        )
    result["colour_accuracy"] = sum(result[f"colour_accuracy_{part}"] for part in PARTS) / len(PARTS)
    return result


def train(recipe: dict[str, Any], log: Any = print, command: str | None = None) -> tuple[SpeciesCLIP, dict[str, Any]]:
    """Train the model of ``recipe`` (see :data:`RECIPE`); returns it (eval mode) and its metadata."""
    torch.manual_seed(recipe["seed"])
    note = training.Notes(log)
    started = time.perf_counter()
    data = recipe["data"]
    species = SyntheticSpecies(**data["generator"])
    train_set = species.sample_split(data["train_size"], data["train_seed"])
    test_set = species.sample_split(data["test_size"], data["test_seed"])
    data_seconds = time.perf_counter() - started
    note(f"[species-clip] data: {len(train_set)} train, {len(test_set)} test images in {data_seconds:.1f} s")

    model = SpeciesCLIP(**recipe["architecture"])

    def step(index: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        images, labels = train_set.images[index], train_set.labels[index]
        if recipe["flip"]:
            images = training.mirrored(images, training.coin_flips(len(index), generator))
        captions = random_captions(species, labels, generator)
        truth = caption_truth(species, captions, labels)
        tokens = model.tokenizer([caption_text(c, bird=bool(i % 2)) for i, c in enumerate(captions)])
        loss = siglip_loss(model(images, tokens), truth)
        return loss, {"loss": float(loss.detach()) * len(index)}

    def end(epoch: int, sums: dict[str, float], elapsed: Callable[[], float]) -> None:
        scores = evaluate(model, species, test_set.images[:512], test_set.labels[:512])
        note(
            f"[species-clip] epoch {epoch + 1}/{recipe['epochs']}: loss {sums['loss'] / len(train_set):.4f}, zero-shot "
            f"{scores['zero_shot_accuracy']:.3f}, colours {scores['colour_accuracy']:.3f} on 512 test images "
            f"({elapsed():.0f} s)"
        )

    train_seconds = training.fit(model, recipe, len(train_set), step, 0.25, end)
    model.eval()
    scores = evaluate(model, species, test_set.images, test_set.labels)
    per_part = ", ".join(f"{part} {scores['colour_accuracy_' + part]:.3f}" for part in PARTS)
    note(
        f"[species-clip] test: zero-shot species accuracy {scores['zero_shot_accuracy']:.4f}, colour naming "
        f"{scores['colour_accuracy']:.4f} ({per_part})"
    )
    metadata = {
        "name": "species-clip",
        "architecture": recipe["architecture"],
        "cam_layer": SpeciesCLIP.cam_layer,
        "input": {"channels": 3, "size": int(train_set.images.shape[-1]), "range": [0.0, 1.0]},
        "data": data,
        "level": "easy",
        "class_names": list(species.class_names),
        "test_accuracy": scores["zero_shot_accuracy"],
        "test_scores": scores,
        "test_images": len(test_set),
        "train_images": len(train_set),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": training.record(
            recipe,
            0.25,
            {"flip": recipe["flip"]},
            (data_seconds, train_seconds),
            "scripts/train_species_clip.py",
            command or "python scripts/train_species_clip.py",
            note.lines,
            head={"loss": "SigLIP pairwise sigmoid (arXiv 2303.15343) against the truth of every caption of the batch"},
        ),
    }
    return model, metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    training.add_common_arguments(parser, "override the training set size (experiments)")
    args = training.parse_and_prepare(parser, argv)
    recipe = training.with_overrides(RECIPE, args)
    model, metadata = train(
        recipe, log=training.echo, command=training.command_line("python scripts/train_species_clip.py", args)
    )
    training.save_model(args.out, "species-clip", model, metadata, KIND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
