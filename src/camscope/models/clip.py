"""CLIP: explain image-text similarity, and compare text prompts (Finer-CAM Sec. 3.3).

A zero-shot CLIP "classifier" is a set of text prompts: the logit of prompt
``p`` is the model's scaled cosine similarity

    y_p = exp(t) * <f(x) / |f(x)|, g_p / |g_p|>   (+ b where the model has a logit bias)

between the image embedding ``f(x)`` and the prompt's text embedding ``g_p``.
:class:`CLIPClassifier` wraps a CLIP model and a set of prompts into an
``nn.Module`` whose output is these logits ``[B, P]``, so every camscope method
and target works on it unchanged: Grad-CAM of one prompt, or Finer-CAM of a
prompt against another ("red epaulets" vs "bird") with
``camscope.Finer(explained=0, references=[1])``. The text embeddings are
computed once, without autograd; only the image tower runs per call.

Supported: Hugging Face ``transformers`` CLIP models (``CLIPModel``, ViT image
towers; any model with ``get_image_features`` / ``get_text_features``) and
``open_clip`` models (ViT and ResNet image towers; any model with
``encode_image`` / ``encode_text``). Both are optional: ``pip install
camscope[clip]``. Pretrained weights are downloaded by those libraries, hence
need network the first time. camscope's own image-text model of the synthetic
species (:class:`camscope.models.small_clip.SpeciesCLIP`, open_clip's interface)
ships with the package and loads offline: ``load_clip("camscope:species-clip")``.

Layers: for ViT towers the default layer is the first LayerNorm of the last
block (``model.vision_model.encoder.layers.11.layer_norm1`` for transformers,
``model.visual.transformer.resblocks.11.ln_1`` for open_clip); for ResNet towers
the last convolutional stage (``model.visual.layer4``, before the attention pooling).

Example:
    >>> import camscope, torch
    >>> from transformers import CLIPConfig, CLIPModel  # doctest: +SKIP
    >>> model = CLIPModel(CLIPConfig(vision_config=dict(image_size=32, patch_size=8)))  # doctest: +SKIP
    >>> classifier = CLIPClassifier(model, ["red epaulets", "bird"], tokenizer=tokenizer)  # doctest: +SKIP
    >>> camscope.explain(classifier, x, method="gradcam", target=camscope.Finer(explained=0, references=[1]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from camscope.errors import CamscopeError, needs_extra

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIPClassifier", "LoadedCLIP", "clip_backend", "load_clip"]

#: Image statistics of OpenAI's CLIP preprocessing.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_OPEN_CLIP_PREFIX = "open_clip:"
_CAMSCOPE_PREFIX = "camscope:"


def clip_backend(model: nn.Module) -> str:
    """``"transformers"`` or ``"open_clip"``: how the model's towers are called.

    Raises:
        CamscopeError: for a model that is neither.
    """
    if callable(getattr(model, "get_image_features", None)) and callable(getattr(model, "get_text_features", None)):
        return "transformers"
    if callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None)):
        return "open_clip"
    raise CamscopeError(
        f"{type(model).__name__} is not a CLIP model camscope knows: it needs get_image_features/get_text_features "
        "(Hugging Face transformers) or encode_image/encode_text (open_clip)"
    )


def _features(output: Any) -> Tensor:
    """A feature tensor from a transformers call (a tensor in 4.x, an output object in 5.x)."""
    if isinstance(output, Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise CamscopeError(f"cannot read embeddings from a {type(output).__name__}")


class CLIPClassifier(nn.Module):
    """A CLIP model and a set of text prompts as a classifier of images.

    ``forward(images)`` returns ``exp(t) * cos(f(images), g_p)`` (plus the
    model's logit bias, if any) for every prompt ``p``: ``[B, P]``.

    Args:
        model: a transformers CLIP model or an open_clip model.
        prompts: the text prompts (the classes). May be omitted when
            ``text_features`` is given.
        tokenizer: turns a list of prompts into token ids: a transformers
            tokenizer (called with ``padding=True, return_tensors="pt"``) or an
            open_clip tokenizer (called on the list). Defaults: transformers:
            ``AutoTokenizer.from_pretrained(model.name_or_path)`` (offline for a
            local folder or a cached model); open_clip: the OpenAI BPE
            tokenizer bundled with open_clip at the model's context length
            (right for OpenAI-vocabulary models; pass
            ``open_clip.get_tokenizer(name)`` for others).
        text_features: precomputed prompt embeddings ``[P, D]`` instead of
            encoding ``prompts``.

    Attributes:
        prompts: the prompt texts, in logit order.
        text_features: the unit-norm prompt embeddings ``[P, D]`` (a buffer).
        backend: ``"transformers"`` or ``"open_clip"``.

    Example:
        >>> import camscope, open_clip, torch  # doctest: +SKIP
        >>> model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained="openai")  # doctest: +SKIP
        >>> classifier = CLIPClassifier(model, ["red epaulets", "bird"])  # doctest: +SKIP
        >>> camscope.explain(classifier, x, method="finer-gradcam", target=0, references=[1])  # doctest: +SKIP
    """

    text_features: Tensor

    def __init__(
        self,
        model: nn.Module,
        prompts: Sequence[str] | None = None,
        tokenizer: Callable[..., Any] | None = None,
        *,
        text_features: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise CamscopeError(f"model must be a CLIP nn.Module, got {type(model).__name__}")
        self.backend = clip_backend(model)
        self.model = model
        self.tokenizer = tokenizer
        self.prompts: list[str] = []
        self.register_buffer("text_features", torch.empty(0), persistent=False)
        self.set_prompts(prompts, text_features=text_features)

    # ------------------------------------------------------------------ text
    def set_prompts(self, prompts: Sequence[str] | None = None, *, text_features: Tensor | None = None) -> None:
        """Replace the prompts (the classes); their embeddings are computed once here."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if text_features is None:
            if not prompts:
                raise CamscopeError("give at least one text prompt (or text_features=[P, D])")
            text_features = self.encode_text(prompts)
        if not isinstance(text_features, Tensor) or text_features.ndim != 2 or text_features.shape[0] == 0:
            shape = list(text_features.shape) if isinstance(text_features, Tensor) else type(text_features).__name__
            raise CamscopeError(f"text_features must be a matrix [prompts, dim], got {shape}")
        if prompts is not None and len(prompts) != text_features.shape[0]:
            raise CamscopeError(f"{len(prompts)} prompts were given with {text_features.shape[0]} text embeddings")
        self.text_features = F.normalize(text_features.detach().float(), dim=-1).to(self._device())
        self.prompts = list(prompts) if prompts is not None else [f"prompt {i}" for i in range(text_features.shape[0])]

    def _device(self) -> torch.device:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def _default_tokenizer(self) -> Callable[..., Any]:
        if self.backend == "open_clip":
            with needs_extra("clip", "the tokenizer of an open_clip model"):
                from open_clip.tokenizer import SimpleTokenizer

            context = int(getattr(self.model, "context_length", 77) or 77)
            return SimpleTokenizer(context_length=context)
        name = getattr(self.model, "name_or_path", "") or getattr(
            getattr(self.model, "config", None), "_name_or_path", ""
        )
        if not name:
            raise CamscopeError(
                "this transformers CLIP model has no name_or_path to load its tokenizer from: pass tokenizer= "
                "(e.g. transformers.AutoTokenizer.from_pretrained(name))"
            )
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(name, local_files_only=Path(name).expanduser().exists())
        except Exception as error:
            raise CamscopeError(f"could not load the tokenizer of {name!r} ({error}): pass tokenizer=") from error

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """The prompts' text embeddings ``[P, D]`` (not normalised), without autograd."""
        if self.tokenizer is None:
            self.tokenizer = self._default_tokenizer()
        device = self._device()
        prompts = list(prompts)
        if self.backend == "transformers":
            encoded = self.tokenizer(prompts, padding=True, return_tensors="pt")
            if isinstance(encoded, Tensor):
                encoded = {"input_ids": encoded}
            inputs = {key: encoded[key].to(device) for key in ("input_ids", "attention_mask") if key in encoded}
            return _features(self.model.get_text_features(**inputs)).float()  # type: ignore[operator]
        tokens = self.tokenizer(prompts)
        tokens = tokens["input_ids"] if isinstance(tokens, dict) else tokens
        return _features(self.model.encode_text(torch.as_tensor(tokens).to(device))).float()  # type: ignore[operator]

    def classifier_weights(self) -> Tensor:
        """The "classifier" rows: the unit-norm prompt embeddings ``[P, D]`` (used by class similarity)."""
        return self.text_features

    # ------------------------------------------------------------------ image
    def encode_image(self, images: Tensor) -> Tensor:
        """The image embeddings ``[B, D]`` (not normalised), with autograd as the caller has it."""
        if self.backend == "transformers":
            return _features(self.model.get_image_features(pixel_values=images))  # type: ignore[operator]
        return _features(self.model.encode_image(images))  # type: ignore[operator]

    def logit_scale(self) -> Tensor:
        """``exp(t)``, the model's learned temperature (1 when it has none)."""
        scale = getattr(self.model, "logit_scale", None)
        return scale.exp() if isinstance(scale, Tensor) else torch.ones(())

    def forward(self, images: Tensor) -> Tensor:
        image = F.normalize(self.encode_image(images), dim=-1)
        text = self.text_features.to(device=image.device, dtype=image.dtype)
        logits = self.logit_scale().to(image) * image @ text.T
        bias = getattr(self.model, "logit_bias", None)
        if isinstance(bias, Tensor):
            logits = logits + bias.to(logits)
        return logits

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}, prompts={self.prompts!r}"


# ---------------------------------------------------------------------- loading


@dataclass
class LoadedCLIP:
    """A CLIP model loaded by name, with its tokenizer and image preprocessing.

    Attributes:
        model: the CLIP model (eval mode).
        tokenizer: its tokenizer.
        config: a :class:`camscope.models.DataConfig` for :func:`camscope.models.load_image`.
        name: the name it was loaded from.
    """

    model: nn.Module
    tokenizer: Callable[..., Any]
    config: Any
    name: str

    def classifier(self, prompts: Sequence[str]) -> CLIPClassifier:
        """The model as a classifier over ``prompts``."""
        return CLIPClassifier(self.model, prompts, tokenizer=self.tokenizer)


def _data_config(mean: Sequence[float], std: Sequence[float], size: int, interpolation: str = "bicubic") -> Any:
    from camscope.models import DataConfig

    return DataConfig(tuple(float(v) for v in mean), tuple(float(v) for v in std), interpolation, 1.0, int(size))  # type: ignore[arg-type]


def load_clip(name: str = "openai/clip-vit-base-patch16", device: str | torch.device | None = None) -> LoadedCLIP:
    """Load a CLIP model, its tokenizer and its preprocessing.

    Args:
        name: a transformers model id or a local folder saved with
            ``save_pretrained`` (model and tokenizer), or
            ``"open_clip:ARCH/PRETRAINED"`` (e.g. ``"open_clip:ViT-B-32/openai"``,
            ``"open_clip:RN50/openai"``); ``"open_clip:ARCH"`` without a tag
            builds the architecture with random weights (offline); or
            ``"camscope:species-clip"``, the image-text model shipped in
            :mod:`camscope.models.zoo` (offline; 64 px images in ``[0, 1]``, no normalisation).
        device: where to put the model.

    Raises:
        CamscopeError: if the library is missing, or the model cannot be loaded
            (the message says why: an unknown name, no network for a download).
    """
    text = str(name).strip()
    if text.lower().startswith(_OPEN_CLIP_PREFIX):
        loaded = _load_open_clip(text[len(_OPEN_CLIP_PREFIX) :].strip())
    elif text.lower().startswith(_CAMSCOPE_PREFIX):
        loaded = _load_camscope(text[len(_CAMSCOPE_PREFIX) :].strip())
    else:
        loaded = _load_transformers(text)
    loaded.model.eval()
    if device is not None:
        loaded.model.to(device)
    return loaded


def _load_camscope(name: str) -> LoadedCLIP:
    """A shipped image-text model of :mod:`camscope.models.zoo` (open_clip's interface, its own tokenizer)."""
    from camscope.models import zoo

    if name not in zoo.IMAGE_TEXT_MODELS:
        raise CamscopeError(
            f"camscope ships no image-text model {name!r}: choose "
            + ", ".join(f"camscope:{known}" for known in zoo.IMAGE_TEXT_MODELS)
        )
    model = zoo.load_image_text_model(name)
    size = int(zoo.model_info(name)["input"]["size"])
    # The model takes the images in [0, 1] as rendered: no normalisation, the whole image (no crop margin).
    config = _data_config((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size, "bilinear")
    return LoadedCLIP(model=model, tokenizer=model.tokenizer, config=config, name=f"{_CAMSCOPE_PREFIX}{name}")


def _load_open_clip(spec: str) -> LoadedCLIP:
    with needs_extra("clip", "open_clip models"):
        import open_clip
    arch, _, tag = spec.partition("/")
    if not arch:
        raise CamscopeError("give an open_clip model as open_clip:ARCH/PRETRAINED, e.g. open_clip:ViT-B-32/openai")
    if arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CamscopeError(f"open_clip has no architecture {arch!r}{hint}")
    try:
        model = open_clip.create_model(arch, pretrained=tag or None)
    except Exception as error:
        raise CamscopeError(
            f"could not load open_clip:{spec} ({type(error).__name__}: {error}); pretrained weights are downloaded "
            "the first time and need network (open_clip:ARCH without a tag builds random weights)"
        ) from error
    config = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    size = config.get("size", getattr(getattr(model, "visual", None), "image_size", 224))
    size = size[-1] if isinstance(size, (tuple, list)) else size
    return LoadedCLIP(
        model=model,
        tokenizer=open_clip.get_tokenizer(arch),
        config=_data_config(
            config.get("mean", OPENAI_CLIP_MEAN),
            config.get("std", OPENAI_CLIP_STD),
            int(size),
            "bicubic" if config.get("interpolation", "bicubic") == "bicubic" else "bilinear",
        ),
        name=f"{_OPEN_CLIP_PREFIX}{spec}",
    )


def _load_transformers(name: str) -> LoadedCLIP:
    with needs_extra("clip", "Hugging Face CLIP models"):
        from transformers import AutoModel, AutoTokenizer
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1  # ids are NAME or ORG/NAME
    if looks_local and not path.exists():
        raise CamscopeError(f"no such model folder: {name}")
    local = path.exists()
    source = str(path) if local else name
    try:
        # A local folder is read as it is: no hub request (and no retries when there is no network).
        model = AutoModel.from_pretrained(source, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    except Exception as error:
        raise CamscopeError(
            f"could not load the CLIP model {name!r} ({type(error).__name__}: {error}); a model id is downloaded "
            "the first time and needs network, a local folder must hold save_pretrained output of the model and "
            "its tokenizer"
        ) from error
    clip_backend(model)
    vision = getattr(getattr(model, "config", None), "vision_config", None)
    size = int(getattr(vision, "image_size", 224) or 224)
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local)
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    except (ImportError, OSError, ValueError, AttributeError, TypeError):
        pass  # no image processor saved with the model (or one without a mean and std): CLIP's own statistics
    return LoadedCLIP(model=model, tokenizer=tokenizer, config=_data_config(mean, std, size), name=name)
