"""Finer-CAM: the Finer target, the finer-* methods, reference selection and class similarity.

The maps are checked against autograd computations written here (per-reference
gradients taken one at a time and combined by hand) and against torchcam 0.5.0's
FinerCAM where the settings coincide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import camscope
from camscope import Finer
from camscope.analyses.similarity import class_similarity
from camscope.engine.method import available_methods, get_method, register_method
from camscope.errors import CamscopeError
from camscope.methods.gradient import GradCAM
from camscope.targets.finer import classifier_weights

LAYER = "features"
GRADIENT_METHODS = ("gradcam", "layercam", "gradcampp", "xgradcam", "hirescam")


def _by_hand(model: nn.Module, x: Tensor, layer: nn.Module) -> tuple[Tensor, Tensor]:
    """Logits and the layer's activations as an autograd leaf."""
    captured: dict[str, Tensor] = {}

    def hook(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        captured["A"] = leaf
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    return logits, captured["A"]


def _reference_gradients(
    model: nn.Module, x: Tensor, classes: Tensor, references: Tensor, gamma: float, reverse: bool = False
) -> tuple[Tensor, list[Tensor]]:
    """Activations and, for each reference t separately, d(y_c - gamma y_{d_t}) / dA."""
    logits, activations = _by_hand(model, x, model.features)
    rows = torch.arange(x.shape[0])
    grads = []
    for t in range(references.shape[1]):
        y_c, y_d = logits[rows, classes], logits[rows, references[:, t]]
        score = y_d - y_c if reverse else y_c - gamma * y_d  # reverse: App. C.3's y^d - y^c
        (grad,) = torch.autograd.grad(score.sum(), activations, retain_graph=True)
        grads.append(grad)
    return activations.detach(), grads


def _gradcampp_weights(grad: Tensor, activations: Tensor) -> Tensor:
    grad2, grad3 = grad.pow(2), grad.pow(3)
    denominator = 2 * grad2 + activations.sum(dim=(2, 3), keepdim=True) * grad3
    alpha = torch.where(
        grad2 != 0, grad2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator)), 0.0
    )
    return (alpha * grad.clamp(min=0)).sum(dim=(2, 3), keepdim=True)


def _weights(method: str, grad: Tensor, activations: Tensor) -> Tensor:
    if method == "gradcam":
        return grad.mean(dim=(2, 3), keepdim=True)
    if method == "layercam":
        return grad.clamp(min=0)
    if method == "gradcampp":
        return _gradcampp_weights(grad, activations)
    if method == "xgradcam":
        total = activations.sum(dim=(2, 3), keepdim=True)
        return (activations / torch.where(total != 0, total, torch.ones_like(total)) * grad).sum(
            dim=(2, 3), keepdim=True
        )
    if method == "hirescam":
        return grad
    raise AssertionError(method)


def _top_others(logits: Tensor, classes: Tensor, count: int) -> Tensor:
    """The highest logits other than the explained class, by a Python loop."""
    rows = []
    for b in range(logits.shape[0]):
        order = [int(j) for j in logits[b].argsort(descending=True) if int(j) != int(classes[b])]
        rows.append(order[:count])
    return torch.tensor(rows)


@pytest.fixture
def batch(tiny_cnn: nn.Module, images: Tensor) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    with torch.no_grad():
        logits = tiny_cnn(images)
    classes = logits.argmax(dim=1)
    return tiny_cnn, images, logits, classes


# ---------------------------------------------------------------- maps against hand computations


def test_finer_gradcam_matches_per_reference_weights_averaged_by_hand(batch) -> None:
    model, x, logits, classes = batch
    references = _top_others(logits, classes, 3)
    activations, grads = _reference_gradients(model, x, classes, references, gamma=0.6)
    weights = torch.stack([g.mean(dim=(2, 3)) for g in grads]).mean(dim=0)  # Eq. 8: mean of alpha^{c,d_t}
    expected = (weights[:, :, None, None] * activations).sum(dim=1)

    explanation = camscope.explain(model, x, method="finer-gradcam", layer=LAYER)
    assert explanation.targets.references().tolist() == references.tolist()
    assert explanation.classes.tolist() == classes.tolist()
    torch.testing.assert_close(explanation.raw, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explanation.weights, weights, rtol=1e-5, atol=1e-7)
    # Eq. 7: alpha^{c,d} = alpha^c - gamma alpha^d
    _, (g_c,) = _reference_gradients(model, x, classes, classes[:, None], gamma=0.0)
    per_d = [
        _reference_gradients(model, x, references[:, t], references[:, t : t + 1], gamma=0.0)[1][0] for t in range(3)
    ]
    eq7 = torch.stack([g_c.mean(dim=(2, 3)) - 0.6 * g.mean(dim=(2, 3)) for g in per_d]).mean(dim=0)
    torch.testing.assert_close(weights, eq7, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("aggregate", ["mean-before-relu", "max-before-relu", "mean-after-relu"])
def test_every_method_and_aggregation_against_per_reference_maps(batch, method: str, aggregate: str) -> None:
    model, x, logits, classes = batch
    references = _top_others(logits, classes, 3)
    activations, grads = _reference_gradients(model, x, classes, references, gamma=0.6)
    maps = torch.stack([(_weights(method, g, activations) * activations).sum(dim=1) for g in grads])
    expected = {
        "mean-before-relu": maps.mean(dim=0),
        "max-before-relu": maps.max(dim=0).values,
        "mean-after-relu": maps.clamp(min=0).mean(dim=0),
    }[aggregate]
    explanation = camscope.explain(model, x, method=f"finer-{method}", layer=LAYER, aggregate=aggregate)
    torch.testing.assert_close(explanation.raw, expected, rtol=1e-4, atol=1e-6)
    # The target form gives the same explanation as the shortcut method.
    direct = camscope.explain(model, x, method=method, layer=LAYER, target=Finer(aggregate=aggregate))
    assert torch.equal(direct.raw, explanation.raw)
    assert torch.equal(direct.maps, explanation.maps)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_gamma_zero_reproduces_the_base_method_exactly(batch, method: str) -> None:
    model, x, _, _ = batch
    base = camscope.explain(model, x, method=method, layer=LAYER)
    other = next(c for c in range(5) if c not in base.classes.tolist())
    for options in (
        {},
        {"aggregate": "max-before-relu"},
        {"aggregate": "mean-after-relu", "references": 2},
        {"weighting": "probability"},
        {"select": "closest-logit"},
        {"references": [other]},
    ):
        finer = camscope.explain(model, x, method=f"finer-{method}", layer=LAYER, gamma=0, **options)
        assert torch.equal(finer.raw, base.raw), options
        assert torch.equal(finer.maps, base.maps), options
        assert torch.equal(finer.scores, base.scores), options


def test_gamma_zero_on_an_explicit_class(batch) -> None:
    model, x, _, _ = batch
    base = camscope.explain(model, x, method="gradcam", layer=LAYER, target=2)
    finer = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, target=2, gamma=0.0)
    assert torch.equal(finer.raw, base.raw)


class _PerComponentGradCAM(GradCAM):
    """Grad-CAM declared non-linear, so the engine takes one gradient per reference."""

    name = "test-per-component-gradcam"
    linear_in_gradient = False


register_method(_PerComponentGradCAM)


@pytest.mark.parametrize("weighting", ["uniform", "probability"])
def test_linearity_shortcut_equals_the_per_reference_computation(batch, monkeypatch, weighting: str) -> None:
    model, x, _, _ = batch
    calls: list[dict] = []
    grad = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting)
    fast = camscope.explain(model, x, method="gradcam", layer=LAYER, target=Finer(weighting=weighting))
    assert len(calls) == 1 and not calls[0].get("is_grads_batched"), "one plain backward for a linear method"
    calls.clear()
    slow = camscope.explain(model, x, method=_PerComponentGradCAM.name, layer=LAYER, target=Finer(weighting=weighting))
    assert len(calls) == 1 and calls[0].get("is_grads_batched"), "the T gradients come from one batched backward"
    torch.testing.assert_close(fast.raw, slow.raw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.weights, slow.weights, rtol=1e-5, atol=1e-7)


def test_probability_weighting_is_detached_and_normalised(batch) -> None:
    model, x, logits, classes = batch
    references = _top_others(logits, classes, 3)
    probabilities = logits.softmax(dim=1).gather(1, references)
    share = probabilities / probabilities.sum(dim=1, keepdim=True)
    activations, grads = _reference_gradients(model, x, classes, references, gamma=0.6)
    # Constant weights: sum_t p_t / sum_s p_s * alpha^{c,d_t} (no gradient through the softmax).
    weights = sum(share[:, t, None] * grads[t].mean(dim=(2, 3)) for t in range(3))
    expected = (weights[:, :, None, None] * activations).sum(dim=1)
    explanation = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, weighting="probability")
    torch.testing.assert_close(explanation.raw, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(explanation.targets.reference_weights(), share)


def test_reverse_and_extrapolation(batch) -> None:
    model, x, logits, classes = batch
    references = _top_others(logits, classes, 3)
    for gamma, reverse in ((2.0, False), (1.0, True), (0.6, True)):
        activations, grads = _reference_gradients(model, x, classes, references, gamma=gamma, reverse=reverse)
        weights = torch.stack([g.mean(dim=(2, 3)) for g in grads]).mean(dim=0)
        expected = (weights[:, :, None, None] * activations).sum(dim=1)
        explanation = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, gamma=gamma, reverse=reverse)
        torch.testing.assert_close(explanation.raw, expected, rtol=1e-5, atol=1e-6)


def test_reverse_is_the_papers_y_d_minus_y_c_at_any_gamma(batch) -> None:
    """Finer-CAM App. C.3: the reverse comparison maximises y^d - y^c, whatever gamma is given."""
    model, x, logits, classes = batch
    references = _top_others(logits, classes, 1)
    rows = torch.arange(x.shape[0])

    def by_hand(score_of: object) -> Tensor:
        outputs, activations = _by_hand(model, x, model.features)
        score = score_of(outputs[rows, classes], outputs[rows, references[:, 0]])  # type: ignore[operator]
        (grad,) = torch.autograd.grad(score.sum(), activations)
        return (grad.mean(dim=(2, 3))[:, :, None, None] * activations.detach()).sum(dim=1)

    expected = by_hand(lambda y_c, y_d: y_d - y_c)
    for gamma in (0.0, 0.6, 2.0):
        explanation = camscope.explain(
            model, x, method="finer-gradcam", layer=LAYER, gamma=gamma, reverse=True, references=references
        )
        torch.testing.assert_close(explanation.raw, expected, rtol=1e-5, atol=1e-6)
    # The swapped comparison at a strength gamma is plain Finer-CAM explaining d against c.
    swapped = camscope.explain(
        model, x, method="finer-gradcam", layer=LAYER, gamma=0.6, target=references[:, 0], references=classes[:, None]
    )
    torch.testing.assert_close(swapped.raw, by_hand(lambda y_c, y_d: y_d - 0.6 * y_c), rtol=1e-5, atol=1e-6)


def test_explicit_references_per_sample_and_one_reference(batch) -> None:
    model, x, _, classes = batch
    per_sample = torch.stack([torch.tensor([c for c in range(5) if c != int(k)][:2]) for k in classes])
    activations, grads = _reference_gradients(model, x, classes, per_sample, gamma=0.6)
    expected = (torch.stack([g.mean(dim=(2, 3)) for g in grads]).mean(dim=0)[:, :, None, None] * activations).sum(1)
    explanation = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, references=per_sample)
    torch.testing.assert_close(explanation.raw, expected, rtol=1e-5, atol=1e-6)
    # One reference: the paper's single comparison y_c - gamma y_d, same as ClassDifference.
    target_class = 1
    other = 3
    single = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, target=target_class, references=[other])
    difference = camscope.explain(
        model, x, method="gradcam", layer=LAYER, target=camscope.ClassDifference(target_class, other, gamma=0.6)
    )
    torch.testing.assert_close(single.raw, difference.raw)


def test_torchcam_finercam_where_settings_coincide(batch) -> None:
    torchcam_methods = pytest.importorskip("torchcam.methods")
    model, x, logits, classes = batch
    explained = [int(c) for c in classes]
    explained[1] = int(logits[1].argsort()[1])  # one sample explains a class that is not its top prediction
    with torchcam_methods.FinerCAM(model, LAYER, input_shape=(3, 16, 16), gamma=0.6, num_references=3) as extractor:
        scores = model(x)
        (theirs,) = extractor(explained, scores, normalized=False)
    ours = camscope.explain(
        model,
        x,
        method="gradcam",
        layer=LAYER,
        target=Finer(references=3, gamma=0.6, select="closest-logit", explained=explained),
    )
    torch.testing.assert_close(ours.raw.clamp(min=0), theirs, rtol=1e-4, atol=1e-6)
    # With the top class, the paper's rule picks the same references as the closest logits.
    top = camscope.explain(model, x, method="finer-gradcam", layer=LAYER)
    with torchcam_methods.FinerCAM(model, LAYER, input_shape=(3, 16, 16)) as extractor:
        (theirs_top,) = extractor(classes.tolist(), model(x), normalized=False)
    torch.testing.assert_close(top.raw.clamp(min=0), theirs_top, rtol=1e-4, atol=1e-6)


def test_pytorch_grad_cam_finercam_with_one_reference(batch) -> None:
    """grad-cam 1.5.7 weights references by their softmax probability (not detached); with one reference the
    weight cancels (p / (p + 1e-9)), so its map is Finer-CAM's single comparison y_c - alpha y_d."""
    finer_cam = pytest.importorskip("pytorch_grad_cam.finer_cam")
    model, x, _, _ = batch
    with finer_cam.FinerCAM(model, [model.features]) as peer:
        theirs = torch.from_numpy(peer(input_tensor=x, alpha=0.6, comparison_categories=[1]))
    ours = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, references=1, gamma=0.6)
    torch.testing.assert_close(ours.maps, theirs.float(), rtol=1e-4, atol=1e-4)


def test_works_on_a_vit_and_a_strided_cnn(tiny_vit: nn.Module, strided_cnn: nn.Module, images: Tensor) -> None:
    for model in (tiny_vit, strided_cnn):
        explanation = camscope.explain(model, images, method="finer-layercam", references=2)
        assert explanation.maps.shape == (3, 16, 16)
        assert torch.isfinite(explanation.raw).all()
        assert explanation.targets.references().shape == (3, 2)


# ---------------------------------------------------------------- reference selection


def test_selection_rules() -> None:
    logits = torch.tensor([[5.0, 1.0, 4.0, 3.0, -2.5], [0.0, 2.0, 1.5, 9.0, 2.4]])
    # predicted: highest logits other than the explained (here the top) class
    resolved = Finer(references=2).resolve(logits)
    assert resolved.classes().tolist() == [0, 3]
    assert resolved.references().tolist() == [[2, 3], [4, 1]]
    # explained class not on top: predicted takes the highest others, closest-logit the nearest logits
    predicted = Finer(references=2, explained=1).resolve(logits)
    assert predicted.references().tolist() == [[0, 2], [3, 4]]
    closest = Finer(references=2, explained=1, select="closest-logit").resolve(logits)
    assert closest.references().tolist() == [[3, 2], [4, 2]]
    # weight similarity: cosine of classifier rows
    weights = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2], [0.5, 0.5]])
    similar = Finer(references=2, select="weight-similarity", classifier=weights).resolve(logits)
    assert similar.references().tolist() == [[1, 4], [2, 4]]
    linear = nn.Linear(2, 5)
    with torch.no_grad():
        linear.weight.copy_(weights)
    assert Finer(references=2, select="weight-similarity", classifier=linear).resolve(logits).references().tolist() == [
        [1, 4],
        [2, 4],
    ]
    # the count is capped at the number of other classes
    assert Finer(references=10).resolve(logits).references().shape == (2, 4)
    # explicit references: same for all samples, or per sample; the rule is ignored
    assert Finer(references=[4], explained=0).resolve(logits).references().tolist() == [[4], [4]]
    assert Finer(references=[[1, 2], [2, 4]], select="closest-logit").resolve(logits).references().tolist() == [
        [1, 2],
        [2, 4],
    ]
    assert Finer(references=torch.tensor(2), explained=0).resolve(logits).references().tolist() == [[2], [2]]


def test_weight_similarity_from_the_model(batch) -> None:
    model, x, _, classes = batch
    unit = torch.nn.functional.normalize(model.fc.weight.detach(), dim=1)
    similarity = unit @ unit.T
    expected = []
    for c in classes.tolist():
        order = [int(j) for j in similarity[c].argsort(descending=True) if int(j) != c]
        expected.append(order[:2])
    explanation = camscope.explain(
        model, x, method="finer-gradcam", layer=LAYER, select="weight-similarity", references=2
    )
    assert explanation.targets.references().tolist() == expected


def test_component_scores() -> None:
    logits = torch.tensor([[4.0, 1.0, 3.0, 2.0]])
    target = Finer(references=2, gamma=0.5).resolve(logits)
    torch.testing.assert_close(target(logits), torch.tensor([[2.5, 3.0]]))
    reverse = Finer(references=2, gamma=0.5, reverse=True).resolve(logits)
    torch.testing.assert_close(reverse(logits), torch.tensor([[-1.0, -2.0]]))  # y_d - y_c, gamma not used
    assert Finer(gamma=0).resolve(logits)(logits).shape == (1,)
    assert Finer(references=[2], explained=0).resolve(logits)(logits).shape == (1,)
    weighted = Finer(references=2, gamma=1.0, weighting="probability").resolve(logits)
    p = logits.softmax(dim=1)[0, [2, 3]]
    torch.testing.assert_close(weighted(logits).mean(dim=1), (p / p.sum() * torch.tensor([1.0, 2.0])).sum().reshape(1))
    # unresolved targets resolve on the fly
    torch.testing.assert_close(Finer(references=2, gamma=0.5)(logits), torch.tensor([[2.5, 3.0]]))
    assert "references=[[2, 3]]" in repr(target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": -0.5}, "gamma must be a finite float >= 0"),
        ({"gamma": float("nan")}, "finite"),
        ({"references": 0}, "at least 1"),
        ({"references": "tabby"}, "string"),
        ({"references": [1.5]}, "integer"),
        ({"references": True}, "got True"),
        ({"references": [[True], [0]]}, "bool: True/False are not class numbers"),
        ({"references": [2, np.bool_(False)]}, "bool"),
        ({"references": torch.tensor([True])}, "bool"),
        ({"select": "predictd"}, "did you mean 'predicted'"),
        ({"aggregate": "max"}, "mean-before-relu"),
        ({"weighting": "softmax"}, "uniform"),
        ({"select": "weight-similarity"}, "classifier"),
    ],
)
def test_option_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(CamscopeError, match=message):
        Finer(**kwargs)


def test_bools_nested_in_references_are_not_classes(tiny_cnn, images) -> None:
    """``[[True], [0]]`` was read as classes 1 and 0; the finer-* methods check their option the same way."""
    with pytest.raises(CamscopeError, match=r"option references: .*bool"):
        camscope.explain(tiny_cnn, images[:2], method="finer-gradcam", references=[[True], [0]])


def test_resolution_errors() -> None:
    logits = torch.tensor([[5.0, 1.0, 4.0], [0.0, 2.0, 1.5]])
    with pytest.raises(CamscopeError, match="explained class of sample 1"):
        Finer(references=[1]).resolve(logits)
    with pytest.raises(CamscopeError, match="out of range"):
        Finer(references=[7], explained=0).resolve(logits)
    with pytest.raises(CamscopeError, match="repeat"):
        Finer(references=[2, 2], explained=0).resolve(logits)
    with pytest.raises(CamscopeError, match="rows for a batch of 2"):
        Finer(references=[[1], [2], [0]], explained=0).resolve(logits)
    with pytest.raises(CamscopeError, match="at least 2"):
        Finer().resolve(torch.zeros(2, 1))
    with pytest.raises(CamscopeError, match=r"\[batch, classes\]"):
        Finer().resolve(torch.zeros(2, 3, 4))
    with pytest.raises(CamscopeError, match="3 rows"):
        Finer(select="weight-similarity", classifier=torch.ones(3, 2)).resolve(torch.zeros(1, 4))


def test_method_errors(batch) -> None:
    model, x, _, _ = batch
    with pytest.raises(CamscopeError, match="compares classes"):
        camscope.explain(model, x, method="finer-gradcam", layer=LAYER, target=lambda out: out[:, 0])
    with pytest.raises(CamscopeError, match="one place"):
        camscope.explain(model, x, method="finer-gradcam", layer=LAYER, gamma=0.3, target=Finer())
    with pytest.raises(CamscopeError, match="has no option"):
        camscope.explain(model, x, method="finer-gradcam", layer=LAYER, gama=0.3)
    with pytest.raises(CamscopeError, match="'finer-layercam': option gamma must be a finite float >= 0"):
        get_method("finer-layercam", gamma=-1)
    # a Finer target given to the shortcut without options is used as is
    a = camscope.explain(model, x, method="finer-gradcam", layer=LAYER, target=Finer(references=2))
    assert a.targets.references().shape == (3, 2)


def test_finer_scorecam_delegates_to_scorecam(batch) -> None:
    model, x, _, _ = batch
    if "scorecam" not in available_methods():
        with pytest.raises(CamscopeError, match="needs the scorecam method"):
            camscope.explain(model, x, method="finer-scorecam", layer=LAYER)
        return
    base = camscope.explain(model, x, method="scorecam", layer=LAYER)
    zero = camscope.explain(model, x, method="finer-scorecam", layer=LAYER, gamma=0)
    assert torch.equal(zero.raw, base.raw)
    finer = camscope.explain(model, x, method="finer-scorecam", layer=LAYER)
    direct = camscope.explain(model, x, method="scorecam", layer=LAYER, target=Finer())
    torch.testing.assert_close(finer.raw, direct.raw)
    assert not torch.allclose(finer.raw, base.raw)
    # Eq. 9 ("difference" weights) averaged over references = the mean of the per-reference Score-CAMs.
    references = finer.targets.references()
    per_reference = [
        camscope.explain(
            model,
            x,
            method="scorecam",
            layer=LAYER,
            normalization="difference",
            target=camscope.ClassDifference(finer.classes, references[:, t], gamma=0.6),
        ).raw
        for t in range(references.shape[1])
    ]
    eq9 = camscope.explain(model, x, method="finer-scorecam", layer=LAYER, normalization="difference")
    torch.testing.assert_close(eq9.raw, torch.stack(per_reference).mean(dim=0), rtol=1e-4, atol=1e-5)
    # A max over the references needs one map per reference.
    largest = camscope.explain(
        model, x, method="finer-scorecam", layer=LAYER, normalization="difference", aggregate="max-before-relu"
    )
    torch.testing.assert_close(largest.raw, torch.stack(per_reference).max(dim=0).values, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- class similarity


def test_class_similarity_matrix_curve_and_neighbours(tmp_path: Path) -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    torch.manual_seed(0)
    weights = torch.randn(7, 5)
    similarity = class_similarity(weights, names=[f"class {i}" for i in range(7)])
    expected = torch.from_numpy(cosine_similarity(weights.double().numpy())).float()
    torch.testing.assert_close(similarity.matrix, expected, rtol=1e-5, atol=1e-6)
    # Eq. 12 by a loop: subtract 1 from the diagonal, sort each row in descending order.
    rows = []
    for p in range(7):
        row = [float(expected[p, q]) - (1.0 if p == q else 0.0) for q in range(7)]
        rows.append(sorted(row, reverse=True))
    rows_t = torch.tensor(rows)
    torch.testing.assert_close(similarity.sorted, rows_t, rtol=1e-5, atol=1e-6)
    mean, std = similarity.curve()
    torch.testing.assert_close(mean, rows_t.mean(dim=0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, rows_t.std(dim=0), rtol=1e-4, atol=1e-6)
    # most similar classes by index and by name
    neighbours = similarity.most_similar("Class 2", k=3)
    order = [q for q in expected[2].argsort(descending=True).tolist() if q != 2][:3]
    assert [i for i, _, _ in neighbours] == order
    assert neighbours[0][1] == f"class {order[0]}"
    assert similarity.most_similar(2, k=3) == neighbours
    pairs = similarity.most_similar_pairs(k=1)
    masked = expected - 3 * torch.eye(7)
    best = int(masked.argmax())
    assert {pairs[0][0], pairs[0][1]} == {best // 7, best % 7}
    with pytest.raises(CamscopeError, match="did you mean"):
        similarity.most_similar("clas 2")
    with pytest.warns(DeprecationWarning, match="similarity_curve"):
        path = similarity.plot(tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_similarity_from_models(tiny_cnn: nn.Module) -> None:
    from camscope.models import imagenet_classes

    torch.testing.assert_close(classifier_weights(tiny_cnn), tiny_cnn.fc.weight.detach())
    assert class_similarity(tiny_cnn).names is None
    imagenet = class_similarity(nn.Linear(4, 1000))
    assert imagenet.names == imagenet_classes()
    with pytest.raises(CamscopeError, match=r"no nn\.Linear"):
        classifier_weights(nn.Conv2d(3, 4, 1))
    with pytest.raises(CamscopeError, match="3 class names"):
        class_similarity(torch.ones(4, 2), names=["a", "b", "c"])


def test_similarity_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from camscope.cli.app import main

    output = tmp_path / "similarity.png"
    code = main(
        [
            "similarity",
            "torchvision:resnet18",
            "--weights",
            "none",
            "--class",
            "tabby",
            "--top",
            "3",
            "--output",
            str(output),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tabby" in captured.out
    assert output.read_bytes()[:4] == b"\x89PNG"
    assert main(["similarity", "torchvision:resnet18", "--weights", "none", "--class", "tabbby"]) == 2
    assert "tabby" in capsys.readouterr().err
