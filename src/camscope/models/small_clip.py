"""A small image-text model of the synthetic species: text prompts whose answer is known.

:class:`SpeciesCLIP` is a two-tower model in the style of CLIP (Radford et al. 2021,
arXiv 2103.00020): an image tower (a :class:`~camscope.models.zoo.SmallCNN` whose linear head
projects to the joint space) and a text tower (word embeddings, a one-layer GRU, a linear
projection), compared by the scaled cosine similarity ``exp(t) <f(x)/|f(x)|, g(s)/|g(s)|> + b``.
It has open_clip's interface (``encode_image``, ``encode_text``, ``logit_scale``,
``logit_bias``), so :class:`camscope.models.clip.CLIPClassifier` and ``camscope prompts`` use it
exactly as they use a pretrained CLIP (``load_clip("camscope:species-clip")``).

It is trained (``scripts/train_species_clip.py``) on captions that name the parts' attributes
of synthetic species (:mod:`camscope.data.synthetic`): ``"striped red tail"``, ``"a bird with
a crested head and a long beak"``, ``"blue crest"``. A caption is a list of :class:`Phrase`;
it is *true* of an image when every named attribute is the image's class's
(:func:`caption_truth`), so which pixels a prompt is about is known exactly: the part masks.
The loss is the pairwise sigmoid loss of SigLIP (Zhai et al. 2023, arXiv 2303.15343), which
takes any number of true captions per image in a batch (a caption such as ``"red tail"`` is
true of many species), instead of CLIP's softmax over one matching caption.

Vocabulary (:data:`VOCABULARY`): ``a``, ``bird``, ``with``, ``and``, the colours of
:data:`~camscope.data.synthetic.PALETTE`, the patterns ``plain``, ``striped``, ``spotted``
(body, wing and tail only), the shapes of :data:`~camscope.data.synthetic.SHAPES` except the
head's ``plain`` (a head is ``crested`` or not named by shape), the parts and ``crest`` (a
crested head: ``"red crest"`` names a red crested head). Words outside it are an error, not
silently dropped.

Example:
    >>> import torch
    >>> from camscope.models.small_clip import CaptionTokenizer, SpeciesCLIP
    >>> tokenizer = CaptionTokenizer()
    >>> tokenizer(["striped red tail", "bird"]).shape
    torch.Size([2, 8])
    >>> model = SpeciesCLIP(dim=16, stages=[[8], [8]], text_width=16).eval()
    >>> model.encode_image(torch.rand(2, 3, 64, 64)).shape, model.encode_text(tokenizer(["red tail"])).shape
    (torch.Size([2, 16]), torch.Size([1, 16]))
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.data.synthetic import PALETTE, PARTS, PATTERNS, SHAPES, SyntheticSpecies
from camscope.errors import CamscopeError
from camscope.models.small_cnn import SmallCNN

__all__ = [
    "COLOURS",
    "CONTEXT_LENGTH",
    "VOCABULARY",
    "CaptionTokenizer",
    "Phrase",
    "SpeciesCLIP",
    "caption_text",
    "caption_truth",
    "random_captions",
    "siglip_loss",
]

COLOURS: tuple[str, ...] = tuple(PALETTE)
_SHAPE_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(word for part, words in SHAPES.items() for word in words if (part, word) != ("head", "plain"))
)
#: Every word the text tower knows; index 0 pads.
VOCABULARY: tuple[str, ...] = ("<pad>", "a", "bird", "with", "and", *COLOURS, *PATTERNS, *_SHAPE_WORDS, *PARTS, "crest")
#: Tokens per caption (longer captions are an error): five parts of four words and the joints.
CONTEXT_LENGTH = 32
_TEXTURED = ("body", "wing", "tail")


@dataclass(frozen=True)
class Phrase:
    """One part and the attributes a caption names for it (None: not named).

    ``crest=True`` writes the head as ``"crest"`` (a crested head, so the shape is ``crested``).
    """

    part: str
    colour: str | None = None
    pattern: str | None = None
    shape: str | None = None
    crest: bool = False

    def words(self) -> list[str]:
        if self.crest:
            return [w for w in (self.colour,) if w] + ["crest"]
        return [w for w in (self.shape, self.pattern, self.colour) if w] + [self.part]


def caption_text(phrases: Sequence[Phrase], bird: bool = False) -> str:
    """The caption's words: ``"a bird with long striped red tail and crested head"`` (``bird``: with the prefix)."""
    if not phrases:
        return "a bird" if bird else "bird"
    body = " and ".join(" ".join(p.words()) for p in phrases)
    return f"a bird with {body}" if bird else body


def caption_truth(species: SyntheticSpecies, captions: Sequence[Sequence[Phrase]], labels: Tensor) -> Tensor:
    """``[N, M]`` bool: whether caption ``m`` is true of an image of class ``labels[n]`` (every named attribute)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    styles = [species.describe(c) for c in range(species.num_classes)]
    table = {  # attribute -> [C, P] the word of every class's part
        key: [[style[part][key] for part in PARTS] for style in styles] for key in ("colour", "pattern", "shape")
    }
    words = sorted({w for rows in table.values() for row in rows for w in row})
    code = {w: i for i, w in enumerate(words)}
    coded = {key: torch.tensor([[code[w] for w in row] for row in rows]) for key, rows in table.items()}
    holds = torch.ones(species.num_classes, len(captions), dtype=torch.bool)
    for m, phrases in enumerate(captions):
        for phrase in phrases:
            p = PARTS.index(phrase.part)
            wanted = {
                "colour": phrase.colour,
                "pattern": phrase.pattern,
                "shape": "crested" if phrase.crest else phrase.shape,
            }
            for key, value in wanted.items():
                if value is not None:
                    holds[:, m] &= coded[key][:, p] == code.get(value, -1)
    return holds[labels]


def random_captions(species: SyntheticSpecies, labels: Tensor, generator: torch.Generator) -> list[list[Phrase]]:
    """One true caption per image of class ``labels[n]``: 1 to 3 of its parts (sometimes all 5, or none).

    Each named part gets its colour (probability 0.8), its pattern (0.5, textured parts) and
    its shape (0.4; a head only when crested, then sometimes as ``"crest"``); at least one.
    """
    captions = []
    draws = torch.rand(labels.shape[0], 16, generator=generator).tolist()
    orders = [torch.randperm(len(PARTS), generator=generator).tolist() for _ in range(labels.shape[0])]
    for label, r, order in zip(labels.tolist(), draws, orders):
        count = 0 if r[0] < 0.05 else 5 if r[0] > 0.9 else 1 + int(3 * r[1])
        style = species.describe(label)
        phrases = []
        for i, p in enumerate(order[:count]):
            part = PARTS[p]
            colour = style[part]["colour"] if r[2 + i] < 0.8 else None
            pattern = style[part]["pattern"] if part in _TEXTURED and r[7 + i] < 0.5 else None
            crested = part == "head" and style[part]["shape"] == "crested"
            shape = style[part]["shape"] if (part != "head" or crested) and r[12 + (i % 4)] < 0.4 else None
            if colour is None and pattern is None and shape is None:
                colour = style[part]["colour"]
            crest = crested and shape is not None and pattern is None and r[1] < 0.5
            phrases.append(Phrase(part, colour, pattern, None if crest else shape, crest))
        captions.append(phrases)
    return captions


class CaptionTokenizer:
    """Words to token ids ``[N, L]`` (padded with 0), for :class:`SpeciesCLIP`'s text tower.

    Lower-cases, splits on spaces, hyphens and punctuation; a word outside
    :data:`VOCABULARY` raises :class:`~camscope.errors.CamscopeError` naming it.

    Example:
        >>> CaptionTokenizer()(["Red tail"])[0, :3].tolist()
        [5, 29, 0]
    """

    def __init__(self, vocabulary: Sequence[str] = VOCABULARY, context_length: int = CONTEXT_LENGTH) -> None:
        self.vocabulary = tuple(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.context_length = int(context_length)

    def words(self, text: str) -> list[str]:
        words = [w for w in re.split(r"[\s\-_,.;:!?'\"()]+", str(text).lower()) if w]
        unknown = [w for w in words if w not in self.index or w == "<pad>"]
        if unknown:
            known = ", ".join(w for w in self.vocabulary[1:])
            raise CamscopeError(
                f"the species image-text model does not know the word(s) {', '.join(map(repr, unknown))} "
                f"in the prompt {text!r}: it knows {known}"
            )
        if not words:
            raise CamscopeError(f"the prompt {text!r} has no words")
        if len(words) > self.context_length:
            raise CamscopeError(f"the prompt {text!r} has {len(words)} words, more than {self.context_length}")
        return words

    def __call__(self, texts: Sequence[str] | str) -> Tensor:
        if isinstance(texts, str):
            texts = [texts]
        encoded = [[self.index[w] for w in self.words(t)] for t in texts]
        length = max((len(ids) for ids in encoded), default=1)
        tokens = torch.zeros(len(encoded), max(length, 8), dtype=torch.long)
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens


class SpeciesCLIP(nn.Module):
    """Image tower (a SmallCNN projecting to ``dim``), text tower (embeddings, GRU, projection), temperature and bias.

    Args:
        dim: joint embedding size.
        stages, stem_stride: the image tower's :class:`~camscope.models.zoo.SmallCNN` stages.
        text_width: word embedding and GRU width.
        vocabulary_size: number of token ids (:data:`VOCABULARY`).

    Attributes:
        visual: the image tower; its ``features`` is the layer CAMs explain
            (``cam_layer = "visual.features"``).
        logit_scale: ``t`` (log of the temperature), ``logit_bias``: ``b``.
        tokenizer: a :class:`CaptionTokenizer` (``context_length`` tokens).
    """

    cam_layer: str = "visual.features"

    def __init__(
        self,
        dim: int = 64,
        stages: Sequence[Sequence[int]] = ((32,), (64, 64)),
        stem_stride: int = 2,
        text_width: int = 64,
        vocabulary_size: int = len(VOCABULARY),
    ) -> None:
        super().__init__()
        self.config = {
            "dim": int(dim),
            "stages": [list(map(int, s)) for s in stages],
            "stem_stride": int(stem_stride),
            "text_width": int(text_width),
            "vocabulary_size": int(vocabulary_size),
        }
        self.visual = SmallCNN(3, dim, stages, stem_stride=stem_stride)
        self.token_embedding = nn.Embedding(vocabulary_size, text_width, padding_idx=0)
        self.text_rnn = nn.GRU(text_width, text_width, batch_first=True)
        self.text_projection = nn.Linear(text_width, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.context_length = CONTEXT_LENGTH
        self.tokenizer = CaptionTokenizer(context_length=CONTEXT_LENGTH)

    def encode_image(self, images: Tensor) -> Tensor:
        """``[B, dim]`` image embeddings (not normalised)."""
        return self.visual(images)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``[N, dim]`` text embeddings (not normalised) of token ids ``[N, L]`` (0 pads, at the end)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.token_embedding.weight.device)
        if tokens.ndim != 2 or tokens.shape[0] == 0:
            raise CamscopeError(f"tokens must be [N, L] with N >= 1, got shape {list(tokens.shape)}")
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)
        states, _ = self.text_rnn(self.token_embedding(tokens))  # [N, L, W]
        last = states.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, states.shape[2])).squeeze(1)
        return self.text_projection(last)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """``[B, N]`` logits ``exp(t) cos(f(x), g(s)) + b`` of every image against every caption."""
        image = F.normalize(self.encode_image(images), dim=-1)
        text = F.normalize(self.encode_text(tokens), dim=-1)
        return self.logit_scale.exp() * image @ text.T + self.logit_bias


def siglip_loss(logits: Tensor, truth: Tensor) -> Tensor:
    """SigLIP's pairwise loss: ``-mean log sigmoid(z_ij * logits_ij)``, ``z = +1`` for true pairs, ``-1`` else.

    Averaged over all pairs (SigLIP divides by the batch size; the mean only rescales the learning rate).

    Example:
        >>> import torch
        >>> round(float(siglip_loss(torch.tensor([[10.0, -10.0]]), torch.tensor([[True, False]]))), 5)
        5e-05
    """
    signs = truth.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(signs * logits).mean()
