"""What the explorer computes, through camscope's public API: layers, top-5 predictions, maps.

A :class:`Workbench` holds the models (loaded on first use), the images
(:class:`~camscope.app.images.ImageStore`), the preloaded reference bank and IFA analysis, and
the banks built from the data folder. Its methods run in the worker thread of
:class:`~camscope.app.jobs.JobQueue` only (the worker owns the models).

An explanation request (:class:`~camscope.app.schema.ExplainRequest`, JSON from the page) names an image, a model,
a layer, methods, the explained class and the comparison settings; the result
(:class:`~camscope.app.schema.ExplainResult`) holds one panel per map: the methods asked for, and an
S-CAM on the analysis's signed scale when one is loaded and asked for. Each panel's
``maps`` is exactly ``camscope.Explainer(model, layer, method, **options)(x, target).maps[0]``
for the settings recorded in ``settings``.

Choices made here:

* Inputs are prepared as ``camscope explain`` prepares them: :func:`camscope.models.load_image`
  at ``size`` with the model's data config (resize, centre crop, normalise); maps are drawn over
  the whole photo, in the crop's place, the rest faded.
* Finer-CAM (``finer-*`` methods): ``versus`` lists the compared classes (the page preselects
  the model's next predictions); an empty list lets Finer-CAM choose three by prediction.
* DiffCAM's reference group: the loaded bank (``--bank``; DiffCAM runs at the bank's layer),
  a bank of the ``--data`` folder built once per model and layer (class sub-folders give
  the classes), or the other bundled photos as one group (``photos``; the group spec is then
  the whole group). No target is passed to DiffCAM: it finds the example's class itself
  (``predict="auto"``), since a bank's classes need not be the model's. Its panel names that
  class from the bank (bank label 1 is not the model's class 1); against the other photos it
  explains no class, and its title says so (clicking a class of the top-5 does not change it).
  A preloaded bank answers only the model it was built with, and says which.
* The S-CAM panel uses the analysis's method and layer (a scale is fitted for one method and
  layer); with ``principal`` it is an FS-CAM with the explained class's principal features.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from camscope.app.images import ImageStore
from camscope.app.jobs import Job
from camscope.app.schema import (
    TOP_CHANNELS,
    ExplainRequest,
    ExplainResult,
    Panel,
    finer_references,
    is_finer,
    top_contributions,
    top_predictions,
)
from camscope.errors import CamscopeError
from camscope.models.preprocessing import Photo

__all__ = ["Workbench"]


@dataclass
class _Model:
    """A model the page can choose: its spec, and once loaded, the network, its data config and class names."""

    spec: str | nn.Module
    weights: str | None
    network: nn.Module | None = None
    config: Any = None
    names: list[str] = field(default_factory=list)


class Workbench:
    """The models, images, bank and analysis of one explorer, and what the page asks of them.

    Args:
        models: name -> a :func:`camscope.models.load_model` name (``efficientnet_lite0``,
            ``torchvision:NAME``, ``timm:NAME``) or a ready ``nn.Module``; the first is the default.
        weights: name -> ``"default"``, ``None`` (random weights) or a checkpoint path, for the named models.
        images: the image store.
        bank: a preloaded :class:`camscope.ReferenceBank` for DiffCAM.
        analysis: a preloaded :class:`camscope.Analysis` for S-CAMs.
        size: the input size.
        device: where the models run (default: the CPU).
    """

    def __init__(
        self,
        models: Mapping[str, str | nn.Module],
        *,
        weights: Mapping[str, str | None] | None = None,
        images: ImageStore | None = None,
        bank: Any = None,
        analysis: Any = None,
        size: int = 224,
        device: str | torch.device | None = None,
    ) -> None:
        if not models:
            raise CamscopeError("the explorer needs at least one model")
        weights = weights or {}
        self.models = {name: _Model(spec, weights.get(name, "default")) for name, spec in models.items()}
        self.images = images or ImageStore()
        self.bank = bank
        self.analysis = analysis
        self.size = size
        from camscope.models import check_device

        self.device = check_device(device) or torch.device("cpu")
        self.data_banks: dict[tuple[str, str], Any] = {}

    # -- models and inputs ------------------------------------------------------------------

    def describe_models(self) -> list[dict[str, Any]]:
        """The models the page offers (the first is the default)."""
        return [
            {
                "name": name,
                "weights": "random" if entry.weights is None else str(entry.weights),
                "note": "random weights: not a trained model" if entry.weights is None else "",
            }
            for name, entry in self.models.items()
        ]

    def model(self, name: str) -> _Model:
        """The loaded model (loaded on first use)."""
        from camscope.models import data_config, imagenet_classes, load_model

        entry = self.models.get(name)
        if entry is None:
            raise CamscopeError(f"unknown model {name!r}: the explorer was started with {', '.join(self.models)}")
        if entry.network is None:
            network = entry.spec if isinstance(entry.spec, nn.Module) else load_model(entry.spec, weights=entry.weights)
            network = network.to(self.device).eval()
            with torch.no_grad():
                config = data_config(entry.spec if isinstance(entry.spec, str) else network)
                logits = network(torch.zeros(1, 3, self.size, self.size, device=self.device))
            count = int(logits.shape[1])
            entry.config = config
            entry.names = imagenet_classes() if count == 1000 else [f"class {i}" for i in range(count)]
            entry.network = network
        return entry

    def inputs(self, image: str, model: _Model) -> tuple[Tensor, Photo]:
        """The model's input ``[1, 3, size, size]`` of an image and the whole photo with the crop's place."""
        from camscope.models import load_photo

        x, photo = load_photo(self.images.rgb(image), size=self.size, config=model.config)
        return x.to(self.device), photo

    def layers(self, name: str) -> dict[str, Any]:
        """The candidate layers with their output shapes and the default, as ``camscope layers`` lists them."""
        from camscope.engine.capture import candidate_layers, default_layer

        network = self.model(name).network
        assert network is not None
        x = torch.zeros(1, 3, self.size, self.size, device=self.device)
        return {
            "model": name,
            "default": default_layer(network, x),
            "layers": [
                {"name": layer, "shape": list(shape)} for layer, shape in candidate_layers(network, x, all_layers=False)
            ],
        }

    def predict(self, image: str, name: str) -> dict[str, Any]:
        """The top-5 classes with probabilities."""
        model = self.model(name)
        assert model.network is not None
        x, _ = self.inputs(image, model)
        with torch.no_grad():
            logits = model.network(x)
        return {"image": image, "model": name, "predictions": top_predictions(logits, model.names)[0]}

    # -- explanations ---------------------------------------------------------------------------

    def explain(self, request: ExplainRequest, job: Job | None = None) -> ExplainResult:
        """Every panel of a request (checks ``job`` for cancellation between maps)."""
        import camscope

        model = self.model(request.model)
        network = model.network
        assert network is not None
        x, photo = self.inputs(request.image, model)
        with torch.no_grad():
            logits = network(x)
        target = request.target if request.target is not None else int(logits.argmax(dim=1)[0])
        if not 0 <= target < logits.shape[1]:
            raise CamscopeError(f"class {target} is out of range for a model with {logits.shape[1]} classes")
        probability = float(logits.softmax(dim=1)[0, target])
        explained = {"class": target, "name": model.names[target], "probability": probability}
        panels = []
        for method in request.methods:
            if job is not None:
                job.check()
            options, layer, caption = self._method_options(method, request, model, x)
            explanation = camscope.Explainer(network, layer=layer, method=method, **options)(
                x, target=None if method == "diffcam" else target
            )
            panels.append(self._panel(method, method, explanation, model, caption, explained))
        if request.scaled:
            if job is not None:
                job.check()
            panels.append(self._scaled_panel(request, model, x, target, explained))
        settings = {
            **request.settings(),
            "target": target,
            "size": self.size,
            "image_label": self.images.label(request.image),
        }
        return ExplainResult(photo, panels, settings, explained, top_predictions(logits, model.names)[0])

    def _method_options(
        self, method: str, request: ExplainRequest, model: _Model, x: Tensor
    ) -> tuple[dict[str, Any], str | None, str]:
        """The method's options, its layer and a caption of the comparison."""
        if is_finer(method):
            options: dict[str, Any] = {"gamma": request.gamma}
            if request.versus:
                options["references"] = list(request.versus)
                versus = ", ".join(model.names[c][:16] for c in request.versus if 0 <= c < len(model.names))
            else:
                versus = "3 most similar classes"
            return options, request.layer, f"vs {versus}; gamma {request.gamma:g}"
        if method == "diffcam":
            return self._diffcam_options(request, model, x)
        return {}, request.layer, ""

    def _diffcam_options(
        self, request: ExplainRequest, model: _Model, x: Tensor
    ) -> tuple[dict[str, Any], str | None, str]:
        """DiffCAM's reference group from the bank, the data folder's bank, or the other photos."""
        if request.source == "photos":
            others = [name for name in self.images.photos if f"photo:{name}" != request.image]
            reference = torch.cat([self.inputs(f"photo:{name}", model)[0] for name in others])
            return {"reference": reference}, request.layer, f"vs the other photos ({len(others)})"
        if request.source == "bank":
            if self.bank is None:
                raise CamscopeError("no reference bank: start camscope serve with --bank FILE (camscope bank build)")
            self._check_bank_model(request.model)
            return (
                {"bank": self.bank, "reference": request.reference},
                self.bank.layer,
                f"vs {request.reference} (bank)",
            )
        bank = self.data_bank(request.model, model, request.layer, x)
        return {"bank": bank, "reference": request.reference}, bank.layer, f"vs {request.reference} (data folder)"

    def _check_bank_model(self, name: str) -> None:
        """The preloaded bank's statistics are those of one model's layer: another model cannot use them."""
        built = str((self.bank.model or {}).get("name") or "")
        spec = self.models[name].spec
        if built and isinstance(spec, str) and built.strip().lower() != spec.strip().lower():
            raise CamscopeError(
                f"this reference bank was built with {built} (layer {self.bank.layer}), not {name}: choose the "
                f"model {built}, or other reference data for DiffCAM (the other photos, or the data folder)"
            )

    def data_bank(self, name: str, model: _Model, layer: str | None, x: Tensor) -> Any:
        """A reference bank of the ``--data`` folder for a model and layer, built once (a dataset pass)."""
        import camscope
        from camscope.data.folders import ImageFolderData
        from camscope.engine.capture import default_layer
        from camscope.passes.batches import ImageTransform

        if self.images.data is None:
            raise CamscopeError("no data folder: start camscope serve with --data FOLDER, or use the photos")
        assert model.network is not None
        layer = layer or default_layer(model.network, x)
        key = (name, layer)
        if key not in self.data_banks:
            root = self.images.data
            dataset = ImageFolderData(root, transform=ImageTransform(self.size, model.config), size=self.size)
            _keep_inside(dataset, root)
            self.data_banks[key] = camscope.ReferenceBank.build(
                model.network,
                dataset,
                layer=layer,
                size=self.size,
                device=self.device,
                model_name=name,
                progress=False,
            )
        return self.data_banks[key]

    def _scaled_panel(
        self, request: ExplainRequest, model: _Model, x: Tensor, target: int, explained: dict[str, Any]
    ) -> Panel:
        """An S-CAM (FS-CAM with ``principal``) on the analysis's signed scale, with the principal features."""
        import camscope

        analysis = self.analysis
        if analysis is None:
            raise CamscopeError("no analysis: start camscope serve with --analysis FILE (camscope analyze)")
        assert model.network is not None
        features = None
        caption = f"signed scale of the analysis ({analysis.method} at {analysis.layer})"
        if request.principal is not None:
            features = analysis.principal_features(request.principal, cls=[target]).to(x.device)
            caption += f"; top {request.principal:g} principal features"
        explanation = camscope.Explainer(model.network, layer=analysis.layer, method=analysis.method)(
            x, target=target, features=features, scale=analysis
        )
        key = "fs-cam" if features is not None else "s-cam"
        panel = self._panel(key, str(analysis.method), explanation, model, caption, explained, signed=True)
        from camscope.engine.method import display_name

        panel.title = (
            f"{'FS' if features is not None else 'S'}-CAM ({display_name(str(analysis.method))}): "
            f"{panel.title.split(': ', 1)[-1]}"
        )
        panel.extra["principal_features"] = self._principal_shares(target)
        return panel

    def _principal_shares(self, target: int, count: int = TOP_CHANNELS) -> list[dict[str, Any]]:
        """The analysis's features with the largest importance for a class, with their share of its total."""
        analysis = self.analysis
        if analysis is None or not analysis.has_importance or not bool(analysis.present_classes()[target]):
            return []
        column = analysis.importance[:, target].double()
        total = float(column.clamp(min=0).sum())
        order = column.argsort(descending=True, stable=True)[:count]
        return [
            {"feature": int(f), "importance": float(column[f]), "share": float(column[f]) / total if total > 0 else 0.0}
            for f in order
        ]

    def _panel(
        self,
        key: str,
        method: str,
        explanation: Any,
        model: _Model,
        caption: str,
        explained: dict[str, Any],
        signed: bool = False,
    ) -> Panel:
        from camscope.engine.method import display_name

        layer = explanation.layer if isinstance(explanation.layer, str) else "+".join(explanation.layer)
        if method == "diffcam":
            title = f"{display_name(method)}: {_diffcam_subject(explanation)}"
        else:
            title = f"{display_name(method)}: {explained['name'][:24]} {explained['probability'] * 100:.1f}%"
        extra: dict[str, Any] = {}
        if is_finer(method):
            extra["references"] = finer_references(explanation, model.names)
        return Panel(
            key=key,
            method=method,
            title=title,
            caption=caption,
            maps=explanation.maps[0].detach().float().cpu(),
            raw=explanation.raw[0].detach().float().cpu(),
            layer=layer,
            signed=signed,
            contributions=top_contributions(
                None if explanation.contributions is None else explanation.contributions[0]
            ),
            extra=extra,
        )


def _diffcam_subject(explanation: Any) -> str:
    """What a DiffCAM map explains: the bank class of the example, by the bank's name, or no class at all.

    A bank's labels are not the model's classes (its label 1 is not the model's class 1), so the
    class is named from the bank and given no model probability.
    """
    names = getattr(explanation.targets, "class_names", lambda: None)()
    if names:
        return f"bank class {names[0][:24]}"
    return "this image against its reference group"


def _keep_inside(dataset: Any, root: Any) -> None:
    """Drop the samples (and classes) of an image folder dataset whose files resolve outside ``root``."""
    samples = [(path, label) for path, label in dataset.samples if _inside(path, root)]
    if not samples:
        raise CamscopeError(f"no images inside {root}")
    if dataset.class_names:
        used = sorted({label for _, label in samples})
        renumber = {old: new for new, old in enumerate(used)}
        dataset.class_names = [dataset.class_names[old] for old in used]
        samples = [(path, renumber[label]) for path, label in samples]
    dataset.samples = samples


def _inside(path: Any, root: Any) -> bool:
    try:
        return bool(path.resolve(strict=True).is_relative_to(root))
    except (OSError, RuntimeError):
        return False
