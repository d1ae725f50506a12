"""The metric registry: built-in and user metrics found by name by camscope.evaluate and camscope evaluate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import camscope
from camscope.cli.app import main
from camscope.errors import CamscopeError
from camscope.metrics import (
    MetricResult,
    arcc,
    available_metrics,
    canonical_metric_name,
    confidence_change,
    get_metric,
    most_relevant_first,
    register_metric,
    unregister_metric,
)


@pytest.fixture
def peak_metric() -> Iterator[str]:
    """A user's metric of the maps alone, with a dataset-level summary; removed again afterwards."""

    def summarize(result: MetricResult) -> dict[str, Any]:
        return {"highest": float(result.values["peak"].max())}

    @register_metric("peak_value", kind="maps", aliases=("peak",), summarize=summarize)
    def peak_value(maps: Any, *, scale: float = 1.0) -> MetricResult:
        """The largest map value, times ``scale``."""
        return MetricResult("peak_value", {"peak": scale * maps.maps.flatten(1).amax(dim=1)}, headline="peak")

    yield "peak_value"
    unregister_metric("peak_value")


def test_a_user_metric_runs_in_evaluate(tiny_cnn: nn.Module, images: torch.Tensor, peak_metric: str) -> None:
    report = camscope.evaluate(
        tiny_cnn,
        images,
        metrics=["Peak", "sparseness"],
        layer="features.3",
        metric_options={"peak": {"scale": 2.0}},
        progress=False,
    )
    explanation = camscope.explain(tiny_cnn, images, layer="features.3")
    expected = 2.0 * explanation.maps.flatten(1).amax(dim=1)
    torch.testing.assert_close(report.results["gradcam"]["peak_value"]["peak"], expected)
    assert report.dataset["gradcam"]["peak_value"] == {"highest": pytest.approx(float(expected.max()))}
    assert get_metric("PEAK").description == "The largest map value, times ``scale``."


def test_the_cli_finds_registered_metrics_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], peak_metric: str
) -> None:
    """An unknown name is one error listing every registered metric, a user's included (before any model loads)."""
    code = main(["evaluate", "--data", str(tmp_path), "--metrics", "peak,morf,arcc,nope", "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "unknown metric 'nope'" in error and "peak_value" in error and "most_relevant_first" in error


def test_registering_refuses_clashes_and_bad_kinds(peak_metric: str) -> None:
    def other(maps: Any) -> MetricResult:
        return MetricResult("other", {"v": maps.maps.sum()})

    with pytest.raises(CamscopeError, match="already registered"):
        register_metric("peak_value", kind="maps")(other)
    with pytest.raises(CamscopeError, match=r"names \['rd'\] belong to other metrics"):
        register_metric("my_drop", kind="model", aliases=("rd",))(other)
    with pytest.raises(CamscopeError, match="metric kind must be one of"):
        register_metric("other", kind="pixels")(other)
    with pytest.raises(CamscopeError, match="lower case"):
        register_metric("My Metric", kind="maps")(other)
    register_metric("peak_value", kind="maps", replace=True)(other)
    assert get_metric("peak_value").function is other
    assert "my_drop" not in available_metrics() and "other" not in available_metrics()


def test_the_new_metrics_run_in_evaluate_by_name(tiny_cnn: nn.Module, images: torch.Tensor) -> None:
    options = {"morf": {"fractions": (0.5,)}, "arcc": {"percentages": (0.5,)}}
    report = camscope.evaluate(
        tiny_cnn,
        images,
        metrics=["morf", "cam-mult-image", "arcc", "complexity", "drop_in_confidence"],
        layer="features.3",
        metric_options=options,
        progress=False,
    )
    assert report.metrics == ["most_relevant_first", "confidence_change", "arcc", "complexity", "drop_in_confidence"]
    explanation = camscope.explain(tiny_cnn, images, layer="features.3")
    results = report.results["gradcam"]
    morf = most_relevant_first(tiny_cnn, images, explanation, fractions=(0.5,))
    torch.testing.assert_close(results["most_relevant_first"]["change"], morf["change"])
    change = confidence_change(tiny_cnn, images, explanation)
    torch.testing.assert_close(results["confidence_change"]["change"], change["change"])
    expected = arcc(tiny_cnn, images, explanation, method="gradcam", layer="features.3", percentages=(0.5,))
    torch.testing.assert_close(results["arcc"]["arcc"], expected["arcc"])
    assert canonical_metric_name("LeRF") == "least_relevant_first"
    from camscope.evaluation import METRICS  # the former hand-kept dict, now read from the registry

    assert METRICS["arcc"] == ("explainer", arcc)
