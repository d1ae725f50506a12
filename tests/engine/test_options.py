"""Typed method options: every registered method's declaration, validation and defaults."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

import camscope
from camscope.engine.method import CamContext, CamMethod, CamResult, available_methods, describe_options, get_method
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAM
from camscope.options import Option, resolve_options
from camscope.targets.finer import FINER_OPTIONS, Finer

_SCORE = {
    "batch_size": 32,
    "normalization": "softmax",
    "baseline": None,
    "channels": None,
    "deduplicate": True,
    "progress": None,
}
_FINER = {
    "references": 3,
    "gamma": 0.6,
    "select": "predicted",
    "aggregate": "mean-before-relu",
    "weighting": "uniform",
    "reverse": False,
    "classifier": None,
}
#: The defaults each method used before its options were declared (``options.get(name, default)``).
#: iscam's ``scales`` was None, read as ``"paper"``.
PREVIOUS_DEFAULTS: dict[str, dict[str, Any]] = {
    "cam": {},
    "gradcam": {},
    "gradcampp": {},
    "xgradcam": {},
    "layercam": {},
    "hirescam": {},
    "smoothgradcampp": {"samples": 4, "std": 0.3, "generator": None},
    "scorecam": _SCORE,
    "sscam": {**_SCORE, "samples": 35, "std": 2.0, "noise_on": "mask", "generator": None},
    "iscam": {**_SCORE, "samples": 10, "scales": "paper"},
    "ablationcam": {
        "batch_size": 32,
        "normalization": "relative",
        "value": 0.0,
        "channels": None,
        "recompute": "auto",
        "progress": None,
    },
    "eigencam": {"center": True},
    "eigengradcam": {"center": True},
    "diffcam": {
        "reference": None,
        "bank": None,
        "regularization": "oas",
        "k": 100,
        "knn_group": "samples",  # new in this version: the previous behaviour
        "embedding": None,
        "predict": "auto",
        "check_model": True,
        "batch_size": 64,
    },
    "finer-gradcam": _FINER,
    "finer-gradcampp": _FINER,
    "finer-layercam": _FINER,
    "finer-xgradcam": _FINER,
    "finer-hirescam": _FINER,
    "finer-scorecam": {**_FINER, **_SCORE},
    "gradcam-elementwise": {},
    "shapleycam": {},
    "kpcacam": {"kernel": "sigmoid", "gamma": None},
    "segeigencam": {},
    "fem": {"k": 2.0, "summed": "masks"},
    "randomcam": {"generator": None},
    "refinecam": {"base": "gradcampp"},
    "rollout": {"blocks": None},
    "gradrollout": {"blocks": None},
    "legrad": {"blocks": None, "readout": "model"},
    "finer-gradrollout": {**_FINER, "blocks": None},
    "finer-legrad": {**_FINER, "blocks": None, "readout": "model"},
    # Declared from the start:
    "fullgrad": {},
    "guided-gradcam": {},
    "dff": {"components": 5, "shared": True, "iterations": 200, "tol": 1e-4, "seed": 0},
    "sess": {
        "base": "gradcam",
        "base_options": None,
        "scales": None,
        "num_scales": 12,
        "scale_step_ratio": 2.0 / 7.0,
        "window_size": None,
        "step_size": None,
        "pre_filter_ratio": 0.0,
        "theta": 0.0,
        "pool": "mean",
        "smooth": True,
        "softmax_scores": True,
        "batch_size": 32,
    },
}
#: What a method needs to be constructed at all.
REQUIRED: dict[str, dict[str, Any]] = {"diffcam": {"reference": torch.zeros(4, 3)}}

OPTIONS = [(name, option) for name in sorted(PREVIOUS_DEFAULTS) for option in describe_options(name)]


def _ids(value: Any) -> str:
    return value.name if isinstance(value, Option) else str(value)


def test_every_registered_method_has_its_previous_defaults() -> None:
    built_in = {name for name, cls in available_methods().items() if cls.__module__.startswith("camscope.")}
    assert built_in == set(PREVIOUS_DEFAULTS)
    for name, defaults in PREVIOUS_DEFAULTS.items():
        declared = {option.name: option.default for option in describe_options(name)}
        assert declared == defaults, name
        assert available_methods()[name].option_names() == tuple(defaults)


@pytest.mark.parametrize("name", sorted(PREVIOUS_DEFAULTS))
def test_construction_fills_the_defaults(name: str) -> None:
    required = REQUIRED.get(name, {})
    method = get_method(name, **required)
    assert method.options == {**PREVIOUS_DEFAULTS[name], **required}
    # each default given explicitly is valid and changes nothing
    explicit = get_method(name, **{**PREVIOUS_DEFAULTS[name], **required})
    assert explicit.options == method.options


@pytest.mark.parametrize(("name", "option"), OPTIONS, ids=_ids)
def test_a_value_of_the_wrong_type_names_method_and_option(name: str, option: Option) -> None:
    with pytest.raises(CamscopeError, match=rf"method '{name}': option {option.name} must be"):
        get_method(name, **{**REQUIRED.get(name, {}), option.name: object()})


def _bad_values(option: Option) -> list[Any]:
    """Values of the right type that the declaration rejects."""
    bad: list[Any] = []
    if option.choices:
        bad.append("no-such-choice")
    if option.positive:
        bad.append(0)
    elif option.min is not None:
        bad.append(option.min - 1)
    if option.type is float:
        bad.append(float("nan"))
    if not option.accepts_none:
        bad.append(None)
    return bad


CHECKED = [(name, option, value) for name, option in OPTIONS for value in _bad_values(option)]


@pytest.mark.parametrize(("name", "option", "value"), CHECKED, ids=_ids)
def test_a_bad_value_names_method_option_and_what_is_allowed(name: str, option: Option, value: Any) -> None:
    with pytest.raises(CamscopeError, match=rf"method '{name}': option {option.name} must be") as error:
        get_method(name, **{**REQUIRED.get(name, {}), option.name: value})
    assert option.allowed in str(error.value)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("finer-gradcam", {"references": 0}, "option references: .*at least 1"),
        ("finer-gradcam", {"references": [1.5]}, "option references: .*integer"),
        ("iscam", {"scales": "bogus"}, "option scales: .*'paper'"),
        ("iscam", {"scales": [1, "a"]}, "option scales: .*numbers"),
        ("diffcam", {"regularization": -1.0}, "option regularization: .*>= 0"),
        ("diffcam", {"regularization": "ridge"}, "option regularization: .*'oas'"),
    ],
)
def test_structural_checks(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(CamscopeError, match=message):
        get_method(name, **{**REQUIRED.get(name, {}), **options})


def test_unknown_option_lists_the_declared_ones() -> None:
    with pytest.raises(
        CamscopeError, match=r"no option sampels \(did you mean samples\?\); its options are: samples, std"
    ):
        get_method("smoothgradcampp", sampels=3)


def test_type_rules() -> None:
    count = Option("n", int, 1, "a count", positive=True)
    assert count.validate(np.int64(3), "x") == 3 and type(count.validate(np.int64(3), "x")) is int
    with pytest.raises(CamscopeError, match="must be an int > 0"):
        count.validate(True, "x")
    with pytest.raises(CamscopeError, match="must be an int > 0"):
        count.validate(2.0, "x")
    strength = Option("s", float, 0.5, "a strength", min=0)
    assert strength.validate(2, "x") == 2.0 and isinstance(strength.validate(2, "x"), float)
    for bad in (float("inf"), False, "1", torch.tensor(1.0)):
        with pytest.raises(CamscopeError, match="must be a finite float >= 0"):
            strength.validate(bad, "x")
    flag = Option("f", bool, False, "a flag")
    with pytest.raises(CamscopeError, match="must be a bool"):
        flag.validate(1, "x")
    mode = Option("m", str, "mask", "a mode", choices=("mask", "input"))
    with pytest.raises(CamscopeError, match=r"one of 'mask', 'input'.*got 'inptu' \(did you mean 'input'\?\)"):
        mode.validate("inptu", "x")
    optional = Option("o", int, None, "optional")
    assert optional.accepts_none and optional.validate(None, "x") is None
    assert optional.allowed == "an int or None"
    assert Option("t", (float, torch.Tensor), None, "a number or tensor").type_name == "float | Tensor"


def test_resolve_options_keeps_undeclared_extra_names() -> None:
    declared = (Option("a", int, 1, "a"),)
    assert resolve_options("thing", declared, {"b": "anything"}, extra=("b",)) == {"a": 1, "b": "anything"}
    with pytest.raises(CamscopeError, match="thing has no option c"):
        resolve_options("thing", declared, {"c": 1})


def test_describe_options_takes_names_classes_and_instances() -> None:
    by_name = describe_options("Grad-CAM++")
    assert by_name == describe_options(available_methods()["gradcampp"]) == []
    assert describe_options(get_method("eigencam")) == describe_options("eigencam")
    assert [option.name for option in describe_options("finer-scorecam")][:7] == list(_FINER)
    with pytest.raises(CamscopeError, match="unknown method"):
        describe_options("nomethod")
    with pytest.raises(CamscopeError, match="method name, class or instance"):
        describe_options(3)  # type: ignore[arg-type]


def test_finer_methods_combine_finer_and_base_options() -> None:
    for name, cls in available_methods().items():
        if not name.startswith("finer-") or not cls.__module__.startswith("camscope."):
            continue
        base = available_methods()[name.removeprefix("finer-")]
        assert issubclass(cls, base) and cls.__name__ == f"Finer{base.__name__}"
        assert cls.declared_options == (*FINER_OPTIONS, *base.declared_options)
        assert cls.uses_gradients == base.uses_gradients and cls.linear_in_gradient == base.linear_in_gradient


def test_finer_target_defaults_match_the_declaration() -> None:
    parameters = inspect.signature(Finer).parameters
    assert {option.name: option.default for option in FINER_OPTIONS} == {
        option.name: parameters[option.name].default for option in FINER_OPTIONS
    }
    with pytest.raises(CamscopeError, match="Finer: option reverse must be a bool"):
        Finer(reverse=1)  # type: ignore[arg-type]


def test_a_subclass_that_only_lists_names_still_works(tiny_cnn, images) -> None:
    class Legacy(CamMethod):
        name: ClassVar[str] = "legacy"

        @classmethod
        def option_names(cls) -> tuple[str, ...]:
            return ("scale",)

        def __call__(self, ctx: CamContext) -> CamResult:
            return CamResult(weights=self.options.get("scale", 1.0) * ctx.gradients.mean(dim=(2, 3), keepdim=True))

    doubled = camscope.explain(tiny_cnn, images, method=Legacy(scale=2.0), layer="features.3")
    plain = camscope.explain(tiny_cnn, images, method=GradCAM(), layer="features.3")
    torch.testing.assert_close(doubled.raw, 2 * plain.raw)
    with pytest.raises(CamscopeError, match="no option shift"):
        Legacy(shift=1)
