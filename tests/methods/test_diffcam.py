"""DiffCAM and reference banks: closed forms against numpy/sklearn, the paper's Figure 1, banks, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.errors import CamscopeError
from camscope.methods.diffcam import (
    ReferenceBank,
    ReferenceGroup,
    counterfactual,
    embed,
    oas_shrinkage,
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class FeatureNet(nn.Module):
    """Conv features (the explained layer), global pooling, an optional linear head (float64 for exact checks)."""

    def __init__(self, channels: int = 6, classes: int | None = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(channels, classes) if classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3))
        return self.head(pooled) if self.head is not None else pooled


class FeatureMapNet(nn.Module):
    """A backbone whose output is the feature map itself (no pooling, no head)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 5, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _net(classes: int | None = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FeatureNet(classes=classes).double().eval()


def _layer_embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Independent embedding: the features' spatial mean, computed directly."""
    with torch.no_grad():
        return model.features(x).mean(dim=(2, 3))


def _np_scatter(z: np.ndarray) -> np.ndarray:
    centred = z - z.mean(axis=0)
    return centred.T @ centred


def _labelled_data(model: nn.Module, n: int = 60, classes: int = 3, seed: int = 0, size: int = 12):
    x = torch.randn(n, 3, size, size, generator=_generator(seed), dtype=torch.float64)
    labels = torch.arange(n) % classes
    x = x + labels[:, None, None, None].double() * 0.5  # classes differ
    return x, labels


# ----------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------


def test_weights_match_numpy_closed_form_unregularised_and_ridge() -> None:
    rng = np.random.default_rng(0)
    references = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    z = rng.normal(size=(3, 5))
    group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
    covariance = _np_scatter(references) / len(references)
    mu = references.mean(axis=0)
    expected = np.linalg.solve(covariance, (z - mu).T).T
    got = group.weights(torch.from_numpy(z), regularization=0).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # the paper's scatter form differs by the factor n only: same direction
    paper = np.linalg.solve(_np_scatter(references), (z - mu).T).T
    np.testing.assert_allclose(got, paper * len(references), rtol=1e-9)
    lam = 0.1 * np.trace(covariance) / 5
    ridge = np.linalg.solve(covariance + lam * np.eye(5), (z - mu).T).T
    np.testing.assert_allclose(group.weights(torch.from_numpy(z), regularization=0.1).numpy(), ridge, rtol=1e-9)


def test_oas_regularisation_matches_sklearn() -> None:
    from sklearn.covariance import OAS

    rng = np.random.default_rng(1)
    for n in (8, 40, 400):  # fewer and more references than features
        references = rng.normal(size=(n, 20)) * np.linspace(0.1, 3, 20)
        z = rng.normal(size=(4, 20))
        oas = OAS(store_precision=False).fit(references)
        group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
        assert group.shrinkage() == pytest.approx(oas.shrinkage_, rel=1e-10)
        expected = np.linalg.solve(oas.covariance_, (z - references.mean(axis=0)).T).T
        np.testing.assert_allclose(group.weights(torch.from_numpy(z)).numpy(), expected, rtol=1e-8)
        matrix, lam = group.regularized_covariance("oas")
        np.testing.assert_allclose(matrix.numpy(), oas.covariance_, rtol=1e-10, atol=1e-14)
        assert lam == pytest.approx(oas.shrinkage_ / (1 - oas.shrinkage_) * np.trace(_np_scatter(references) / n) / 20)


def test_direction_recovers_the_discriminative_axis() -> None:
    """The example differs from the group along a low-variance axis and a high-variance one equally."""
    rng = np.random.default_rng(2)
    k = 8
    spread = np.full(k, 10.0)
    spread[0] = 0.5  # the group hardly varies along axis 0: a difference there is discriminative
    references = rng.normal(size=(5000, k)) * spread + 3.0
    z = references.mean(axis=0) + 2.0 * np.eye(k)[0] + 2.0 * np.eye(k)[1]
    group = ReferenceGroup.from_embeddings(torch.from_numpy(references))
    w = group.weights(torch.from_numpy(z[None])).numpy()[0]
    cosine = abs(w[0]) / np.linalg.norm(w)
    assert cosine > 0.99
    # the plain difference z - mu splits evenly between the two axes
    d = z - references.mean(axis=0)
    assert abs(d[0]) / np.linalg.norm(d) < 0.75

    # Fisher criterion: w* beats the plain difference and random directions
    def fisher(v: np.ndarray) -> float:
        return float((v @ d) ** 2 / (v @ _np_scatter(references) @ v))

    assert fisher(w) >= fisher(d)
    assert all(fisher(w) >= fisher(rng.normal(size=k)) for _ in range(50))


def test_oas_default_has_small_shrinkage_with_many_references() -> None:
    rng = np.random.default_rng(3)
    spread = 1.0 / np.arange(1, 17)  # anisotropic (isotropic data would rightly be shrunk all the way)
    many = ReferenceGroup.from_embeddings(torch.from_numpy(rng.normal(size=(5000, 16)) * spread))
    few = ReferenceGroup.from_embeddings(torch.from_numpy(rng.normal(size=(6, 16)) * spread))
    assert many.shrinkage() < 0.01 < few.shrinkage()
    assert oas_shrinkage(torch.zeros(3, 3, dtype=torch.float64), 5) == 1.0


def test_a_single_reference_gives_the_plain_difference() -> None:
    reference = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    group = ReferenceGroup.from_embeddings(reference)
    z = torch.tensor([[2.0, 2.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(group.weights(z), z - reference)
    with pytest.raises(CamscopeError, match="1 references for 3 features"):
        group.weights(z, regularization=0)


# ----------------------------------------------------------------------------------------
# The paper's Figure 1
# ----------------------------------------------------------------------------------------


class LanguageTest(nn.Module):
    """Two features, reading and writing (the 1x1 'features' layer), pooled, and a linear Pass/Fail head.

    The boundary ``0.5 reading + writing = 110`` leans on writing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
            self.head.weight.copy_(torch.tensor([[-0.5, -1.0], [0.5, 1.0]]))  # rows: FAIL, PASS
            self.head.bias.copy_(torch.tensor([110.0, -110.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


FAIL, PASS = 0, 1


def _students(scores: torch.Tensor) -> torch.Tensor:
    """Each student's (reading, writing) as a 2-channel 3x3 image with spatial texture."""
    texture = torch.tensor([[0.9, 1.0, 1.1], [1.0, 1.0, 1.0], [1.1, 1.0, 0.9]])
    return scores[:, :, None, None] * texture


def test_figure_1_diffcam_blames_reading_while_gradcam_blames_writing() -> None:
    generator = _generator(0)
    model = LanguageTest().eval()
    passing = torch.stack(
        [75 + 5 * torch.randn(300, generator=generator), 80 + 10 * torch.randn(300, generator=generator)], 1
    )
    failing = torch.stack(
        [55 + 8 * torch.randn(300, generator=generator), 45 + 10 * torch.randn(300, generator=generator)], 1
    )
    scores = torch.cat([passing, failing])
    labels = model(_students(scores)).argmax(dim=1)  # the model's own Pass/Fail groups
    bank = ReferenceBank.build(model, [(_students(scores), labels)], layer="features", class_names=["fail", "pass"])
    # x_t: poor reading, writing as good as the Pass group's average
    student = _students(torch.tensor([[40.0, float(bank.group("class", "pass").mean[1])]]))
    assert int(model(student).argmax()) == FAIL
    gradcam = camscope.explain(model, student, method="gradcam", layer="features", target=FAIL)
    diffcam = camscope.explain(
        model, student, method="diffcam", layer="features", target=FAIL, bank=bank, reference="others"
    )
    g_read, g_write = gradcam.weights[0].abs().tolist()
    d_read, d_write = diffcam.weights[0].tolist()
    assert g_write > 1.5 * g_read  # Grad-CAM: the boundary's normal, writing
    assert abs(d_read) > 20 * abs(d_write)  # DiffCAM: reading is what sets x_t apart from Pass
    assert d_read < 0  # ... because it is low
    assert diffcam.classes.tolist() == [FAIL]
    # "why fail, not pass" is the same group here (two classes)
    counter = camscope.explain(
        model, student, method="diffcam", layer="features", reference=bank.group("class", "pass")
    )
    torch.testing.assert_close(counter.weights, diffcam.weights)
    # predicted class without target= comes from the 2-class head, which scores the bank's classes 0..1
    predicted = camscope.explain(model, student, method="diffcam", layer="features", bank=bank)
    assert predicted.classes.tolist() == [FAIL]
    torch.testing.assert_close(predicted.weights, diffcam.weights)


# ----------------------------------------------------------------------------------------
# End to end against an independent computation
# ----------------------------------------------------------------------------------------


def test_explain_equals_the_closed_form_on_the_layer() -> None:
    model = _net()
    references = torch.randn(40, 3, 12, 12, generator=_generator(1), dtype=torch.float64)
    x = torch.randn(3, 3, 12, 12, generator=_generator(2), dtype=torch.float64)
    explanation = camscope.explain(model, x, method="diffcam", layer="features", reference=references, regularization=0)
    ref = _layer_embeddings(model, references).numpy()
    z = _layer_embeddings(model, x).numpy()
    w = np.linalg.solve(_np_scatter(ref) / len(ref), (z - ref.mean(0)).T).T
    np.testing.assert_allclose(explanation.weights.numpy(), w, rtol=1e-7)
    with torch.no_grad():
        activations = model.features(x)
    raw = torch.einsum("bk,bkhw->bhw", torch.from_numpy(w), activations)
    torch.testing.assert_close(explanation.raw, raw, rtol=1e-7, atol=1e-9)
    assert explanation.method == "diffcam" and explanation.classes is None
    torch.testing.assert_close(explanation.contributions.sum(dim=1), explanation.raw.sum(dim=(1, 2)))
    # the same references given as embeddings, or as a group, give the same map
    by_embeddings = camscope.explain(
        model, x, method="diffcam", layer="features", reference=torch.from_numpy(ref), regularization=0
    )
    torch.testing.assert_close(by_embeddings.raw, explanation.raw)
    group = ReferenceGroup.from_embeddings(embed(model, references, "features"))
    by_group = camscope.explain(model, x, method="diffcam", layer="features", reference=group, regularization=0)
    torch.testing.assert_close(by_group.raw, explanation.raw)


def test_no_gradients_are_computed() -> None:
    model = _net()
    calls = []
    model.features.register_full_backward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 12, 12, generator=_generator(0), dtype=torch.float64)
    camscope.explain(model, x, method="diffcam", layer="features", reference=torch.randn(5, 6, dtype=torch.float64))
    assert not calls and all(p.grad is None for p in model.parameters())
    assert camscope.available_methods()["diffcam"].uses_gradients is False


# ----------------------------------------------------------------------------------------
# Banks: pooled scatter, updates, merge, save/load, shared mode
# ----------------------------------------------------------------------------------------


def _random_bank_data(seed: int = 0, n: int = 90, k: int = 5, classes: int = 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    z = rng.normal(size=(n, k)) * rng.uniform(0.5, 2, size=k) + labels[:, None] * rng.normal(size=k) + 4.0
    return torch.from_numpy(z), torch.from_numpy(labels)


def _bank_from(z: torch.Tensor, labels: torch.Tensor, batch: int = 7, **kwargs) -> ReferenceBank:
    bank = ReferenceBank(z.shape[1], "layer", **kwargs)
    for start in range(0, len(z), batch):
        bank.update(z[start : start + batch], labels[start : start + batch])
    return bank


@pytest.mark.parametrize("scatter", ["class", "shared"])
def test_class_statistics_and_pooled_groups_equal_the_samples(scatter: str) -> None:
    z, labels = _random_bank_data()
    bank = _bank_from(z, labels, scatter=scatter)
    zn, ln = z.numpy(), labels.numpy()
    for row, label in enumerate(bank.labels):
        members = zn[ln == label]
        assert int(bank.counts[row]) == len(members)
        np.testing.assert_allclose(bank.means[row].numpy(), members.mean(0), rtol=1e-12)
        if scatter == "class":
            np.testing.assert_allclose(bank.class_scatter(label).numpy(), _np_scatter(members), rtol=1e-10, atol=1e-10)
    total = bank.group("all")
    np.testing.assert_allclose(total.scatter.numpy(), _np_scatter(zn), rtol=1e-10)  # exact in both modes
    np.testing.assert_allclose(total.mean.numpy(), zn.mean(0), rtol=1e-12)
    if scatter == "class":
        for kind, classes, members in [
            ("others", 2, ln != 2),
            ("class", [0, 3], np.isin(ln, [0, 3])),
            ("intra", 1, ln == 1),
        ]:
            group = bank.group(kind, classes)
            assert group.count == members.sum()
            np.testing.assert_allclose(group.mean.numpy(), zn[members].mean(0), rtol=1e-12)
            np.testing.assert_allclose(group.scatter.numpy(), _np_scatter(zn[members]), rtol=1e-10, atol=1e-10)
    else:
        # shared mode: exact means and between-class terms, class scatters n_c W / N
        within = sum(_np_scatter(zn[ln == c]) for c in np.unique(ln))
        group = bank.group("others", 2)
        members = ln != 2
        between = sum(
            (ln == c).sum()
            * np.outer(zn[ln == c].mean(0) - zn[members].mean(0), zn[ln == c].mean(0) - zn[members].mean(0))
            for c in np.unique(ln[members])
        )
        np.testing.assert_allclose(group.scatter.numpy(), within * members.sum() / len(zn) + between, rtol=1e-10)


def test_batches_merge_and_halves_equal_the_whole() -> None:
    z, labels = _random_bank_data(seed=1, n=120)
    whole = _bank_from(z, labels, batch=120)
    batched = _bank_from(z, labels, batch=5)
    first = _bank_from(z[:50], labels[:50])
    second = _bank_from(z[50:], labels[50:])
    merged = first.merge(second)
    for bank in (batched, merged):
        order = [bank.labels.index(label) for label in whole.labels]
        torch.testing.assert_close(bank.counts[order], whole.counts)
        torch.testing.assert_close(bank.means[order], whole.means, rtol=1e-12, atol=1e-12)
        for label in whole.labels:
            torch.testing.assert_close(bank.class_scatter(label), whole.class_scatter(label), rtol=1e-10, atol=1e-10)
    # disjoint classes, and a shared-mode bank: merging stays exact for the whole-data statistics
    a = _bank_from(z[labels < 2], labels[labels < 2])
    b = _bank_from(z[labels >= 2], labels[labels >= 2], scatter="shared")
    mixed = a.merge(b)
    assert mixed.scatter_mode == "shared" and sorted(mixed.labels) == sorted(whole.labels)
    torch.testing.assert_close(mixed.group("all").scatter, whole.group("all").scatter, rtol=1e-10, atol=1e-10)


def test_auto_mode_switches_to_a_shared_scatter_when_over_budget() -> None:
    z, labels = _random_bank_data(seed=2, classes=6)
    exact = _bank_from(z, labels)
    with pytest.warns(UserWarning, match="shared within-class scatter"):
        small = _bank_from(z, labels, max_scatter_bytes=3 * 5 * 5 * 8)
    assert small.scatter_mode == "shared" and exact.scatter_mode == "class"
    torch.testing.assert_close(small.group("all").scatter, exact.group("all").scatter, rtol=1e-10, atol=1e-10)


def test_save_load_round_trip_and_checks(tmp_path) -> None:
    model = _net()
    x, labels = _labelled_data(model)
    bank = ReferenceBank.build(
        model, [(x[:30], labels[:30]), (x[30:], labels[30:])], layer="features", class_names=["a", "b", "c"]
    )
    path = bank.save(tmp_path / "bank.safetensors")
    loaded = ReferenceBank.load(path, model=model, layer="features")
    assert loaded.labels == bank.labels and loaded.class_names == ["a", "b", "c"]
    assert loaded.layer == "features" and loaded.embedding == "mean" and loaded.feature_size == 6
    torch.testing.assert_close(loaded.means, bank.means, rtol=0, atol=0)
    torch.testing.assert_close(loaded.group("others", "b").scatter, bank.group("others", "b").scatter, rtol=0, atol=0)
    xq = x[:2]
    before = camscope.explain(model, xq, method="diffcam", layer="features", bank=bank, target=[0, 2])
    after = camscope.explain(model, xq, method="diffcam", layer="features", bank=str(path), target=[0, 2])
    torch.testing.assert_close(after.raw, before.raw)
    # the metadata is JSON with a format version
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        header = json.loads(file.metadata()["camscope"])
    assert header["kind"] == "reference-bank" and header["format_version"] == 1 and header["layer"] == "features"
    # mismatches say what differs
    with pytest.raises(CamscopeError, match="other weights"):
        ReferenceBank.load(path, model=_net(seed=1))
    with pytest.raises(CamscopeError, match="layer: the bank holds 'features'"):
        ReferenceBank.load(path, layer="head")
    with pytest.raises(CamscopeError, match="architecture"):
        ReferenceBank.load(path, model=FeatureNet(channels=4).double())
    (tmp_path / "junk.safetensors").write_bytes(b"not a bank")
    with pytest.raises(CamscopeError, match="not a camscope safetensors file"):
        ReferenceBank.load(tmp_path / "junk.safetensors")


def test_build_from_an_image_folder(tmp_path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    torch.manual_seed(0)
    model = FeatureNet().eval()
    bank = ReferenceBank.build(model, tmp_path, layer="features", size=16, batch_size=4)
    assert bank.class_names == ["cats", "dogs"] and bank.counts.tolist() == [3, 3] and bank.input_size == [16, 16]
    assert bank.label_of("dogs") == 1 and bank.label_of("1") == 1


# ----------------------------------------------------------------------------------------
# Per-example groups: others, intra, knn, predicted classes
# ----------------------------------------------------------------------------------------


def test_others_intra_and_class_groups_per_example() -> None:
    model = _net()
    x, labels = _labelled_data(model)
    bank = ReferenceBank.build(model, [(x, labels)], layer="features")
    xq = torch.randn(3, 3, 12, 12, generator=_generator(5), dtype=torch.float64)
    z = _layer_embeddings(model, xq)
    for kind in ("others", "intra"):
        e = camscope.explain(model, xq, method="diffcam", layer="features", bank=bank, reference=kind, target=[0, 1, 2])
        for i, c in enumerate([0, 1, 2]):
            expected = bank.group(kind, c).weights(z[i : i + 1])
            torch.testing.assert_close(e.weights[i : i + 1], expected, rtol=1e-7, atol=1e-9)
        assert e.classes.tolist() == [0, 1, 2]
        torch.testing.assert_close(e.scores, model(xq).gather(1, torch.tensor([[0], [1], [2]]))[:, 0])
    e = camscope.explain(model, xq, method="diffcam", layer="features", bank=bank, reference="class:0,2")
    torch.testing.assert_close(e.weights, bank.group("class", [0, 2]).weights(z), rtol=1e-7, atol=1e-9)
    # a (bank, spec) pair, and a bank alone (its default group: others), are the same as bank= reference=
    paired = camscope.explain(
        model, xq, method="diffcam", layer="features", reference=(bank, "intra"), target=[0, 1, 2]
    )
    named = camscope.explain(
        model, xq, method="diffcam", layer="features", bank=bank, reference="intra", target=[0, 1, 2]
    )
    torch.testing.assert_close(paired.raw, named.raw)
    with pytest.warns(UserWarning, match=r"bank was built from inputs of size \[12, 12\]"):
        camscope.explain(model, xq[:, :, :8, :8], method="diffcam", layer="features", reference=bank, target=[0, 1, 2])
    alone = camscope.explain(model, xq, method="diffcam", layer="features", reference=bank, target=[0, 1, 2])
    others = camscope.explain(
        model, xq, method="diffcam", layer="features", bank=bank, reference="others", target=[0, 1, 2]
    )
    torch.testing.assert_close(alone.raw, others.raw)


def test_knn_is_exact_and_excludes_the_explained_class() -> None:
    rng = np.random.default_rng(4)
    k, classes = 16, 40
    bank = ReferenceBank(k, "layer")
    centres = rng.normal(size=(classes, k)) * 3
    for c in range(classes):
        bank.update(torch.from_numpy(centres[c] + rng.normal(size=(5, k))), torch.full((5,), c))
    queries = torch.from_numpy(rng.normal(size=(7, k)) * 3)
    own = torch.tensor([0, 5, 9, 1, 2, 3, 4])
    got = bank.nearest_classes(queries, 6, exclude=own)
    means = bank.means.numpy()
    for i, q in enumerate(queries.numpy()):
        distances = [
            (float(np.sum((q - means[r]) ** 2)), label) for r, label in enumerate(bank.labels) if label != int(own[i])
        ]
        assert got[i].tolist() == [label for _, label in sorted(distances)[:6]]
    assert bank.nearest_classes(queries, 100).shape == (7, classes)  # k capped at the classes available
    # the method's knn groups are the pooled groups of those neighbours
    group = bank.group("knn", 5, k=6, embedding=queries[1])
    assert sorted(group.classes) == sorted(got[1].tolist())


def test_knn_and_nearest_class_prediction_in_explain() -> None:
    model = _net(classes=None)  # an embedding model: the outputs are not class scores
    x, labels = _labelled_data(model, classes=4)
    bank = ReferenceBank.build(model, [(x, labels)], layer="features")
    xq = x[:4]
    z = _layer_embeddings(model, xq)
    e = camscope.explain(model, xq, method="diffcam", layer="features", bank=bank, reference="knn:2")
    nearest = bank.nearest_classes(z, 1)[:, 0]
    assert e.classes.tolist() == nearest.tolist()  # predicted as the nearest class mean
    assert torch.isnan(e.scores).all()
    neighbours = bank.nearest_classes(z, 2, exclude=nearest)
    for i in range(4):
        expected = bank.group_of_labels(neighbours[i].tolist()).weights(z[i : i + 1])
        torch.testing.assert_close(e.weights[i : i + 1], expected, rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------------------
# Models without a classifier, token models
# ----------------------------------------------------------------------------------------


def test_self_supervised_backbones_without_a_head() -> None:
    torch.manual_seed(0)
    for model in (FeatureNet(classes=None).eval(), FeatureMapNet().eval()):
        references = torch.randn(12, 3, 16, 16, generator=_generator(1))
        x = torch.randn(2, 3, 16, 16, generator=_generator(2))
        e = camscope.explain(model, x, method="diffcam", layer="features", reference=references)
        assert e.maps.shape == (2, 16, 16) and torch.isfinite(e.raw).all() and e.classes is None
        bank = ReferenceBank.build(model, references, layer="features", batch_size=5)  # unlabelled
        assert not bank.is_labelled and bank.count == 12
        by_bank = camscope.explain(model, x, method="diffcam", layer="features", bank=bank)  # default group: all
        torch.testing.assert_close(by_bank.raw, e.raw, rtol=1e-4, atol=1e-5)


def test_tiny_timm_vit_with_patch_mean_and_class_token() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=24,
        num_heads=2,
        num_classes=3,
    ).eval()
    x, labels = torch.randn(18, 3, 32, 32, generator=_generator(0)), torch.arange(18) % 3
    xq = torch.randn(2, 3, 32, 32, generator=_generator(1))
    layer = "blocks.1.norm1"
    for kind in ("mean", "cls"):
        bank = ReferenceBank.build(model, [(x, labels)], layer=layer, embedding=kind)
        assert bank.feature_size == 24
        e = camscope.explain(model, xq, method="diffcam", layer=layer, bank=bank, target=[0, 2])
        assert e.raw.shape == (2, 4, 4) and torch.isfinite(e.raw).all()
        with torch.no_grad():
            tokens = {}
            handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: tokens.setdefault("t", o))
            model(xq)
            handle.remove()
        z = tokens["t"][:, 0] if kind == "cls" else tokens["t"][:, 1:].mean(dim=1)
        torch.testing.assert_close(e.weights[:1], bank.group("others", 0).weights(z[:1]).float(), rtol=1e-4, atol=1e-5)
        grid = tokens["t"][:, 1:].transpose(1, 2).reshape(2, 24, 4, 4)
        torch.testing.assert_close(e.raw, torch.einsum("bk,bkhw->bhw", e.weights, grid), rtol=1e-4, atol=1e-5)
    with pytest.raises(CamscopeError, match="embedding='cls' needs a token layer"):
        ReferenceBank.build(_net(), [(x.double()[:, :, :12, :12], labels)], layer="features", embedding="cls")


def test_conftest_vit_and_reference_inputs_with_the_class_token(tiny_vit) -> None:
    references = torch.randn(10, 3, 16, 16, generator=_generator(3))
    x = torch.randn(2, 3, 16, 16, generator=_generator(4))
    e = camscope.explain(tiny_vit, x, method="diffcam", layer="blocks.1", reference=references, embedding="cls")
    assert e.raw.shape == (2, 4, 4) and torch.isfinite(e.raw).all()


# ----------------------------------------------------------------------------------------
# Counterfactual pairs
# ----------------------------------------------------------------------------------------


def test_counterfactual_pair() -> None:
    model = _net()
    x, labels = _labelled_data(model)
    bank = ReferenceBank.build(model, [(x, labels)], layer="features", class_names=["a", "b", "c"])
    xq = x[:2]
    pair = counterfactual(model, xq, bank, versus="c", explained="a")
    z = _layer_embeddings(model, xq)
    torch.testing.assert_close(pair.why.weights, bank.group("class", 2).weights(z), rtol=1e-7, atol=1e-9)
    group_a = bank.group("class", 0)
    expected = group_a.solve((bank.group("class", 2).mean - group_a.mean).expand(2, -1))
    torch.testing.assert_close(pair.counterpart.weights, expected, rtol=1e-7, atol=1e-9)
    with torch.no_grad():
        activations = model.features(xq)
    torch.testing.assert_close(pair.counterpart.raw, torch.einsum("bk,bkhw->bhw", expected, activations))
    assert pair.explained.tolist() == [0, 0] and pair.versus == 2 and pair.counterpart.classes.tolist() == [2, 2]
    # with examples of d, the counterpart is DiffCAM on them against class c
    others = x[labels == 2][:3]
    pair = counterfactual(model, xq, bank, versus=2, explained=0, counter_inputs=others)
    torch.testing.assert_close(
        pair.counterpart.weights, group_a.weights(_layer_embeddings(model, others)), rtol=1e-7, atol=1e-9
    )


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_clear_errors() -> None:
    model = _net()
    x, labels = _labelled_data(model, n=12)
    bank = ReferenceBank.build(model, [(x, labels)], layer="features")
    single = ReferenceBank.build(model, [(x[:3], torch.zeros(3, dtype=torch.long))], layer="features")
    xq = x[:1]

    def run(**options):
        return camscope.explain(model, xq, method="diffcam", layer="features", **options)

    with pytest.raises(CamscopeError, match="empty"):
        run(bank=single, reference="others", target=0)
    with pytest.raises(CamscopeError, match="empty"):
        run(reference=torch.zeros(0, 6))
    with pytest.raises(CamscopeError, match="has no class 'zebra'"):
        run(bank=bank, reference="class:zebra")
    with pytest.raises(CamscopeError, match="class 7 is not in the reference bank"):
        run(bank=bank, reference="others", target=7)
    with pytest.raises(CamscopeError, match="4 references for 6 features"):
        run(bank=bank, reference="intra", target=1, regularization=0)
    with pytest.raises(CamscopeError, match="layer: the bank holds 'features', here 'features.0'"):
        camscope.explain(model, xq, method="diffcam", layer="features.0", bank=bank)
    with pytest.raises(CamscopeError, match="other weights"):
        camscope.explain(_net(seed=3), xq, method="diffcam", layer="features", bank=bank)
    with pytest.raises(CamscopeError, match="has 4 features but the layer gives"):
        run(reference=torch.randn(5, 4, dtype=torch.float64))
    with pytest.raises(CamscopeError, match="needs a reference group"):
        run()
    with pytest.raises(CamscopeError, match="unknown reference 'nearby'"):
        run(bank=bank, reference="nearby")
    with pytest.raises(CamscopeError, match="needs a bank"):
        run(reference="others")
    with pytest.raises(CamscopeError, match="regularization must be"):
        run(reference=torch.randn(5, 6), regularization=-1)
    with pytest.raises(CamscopeError, match="unlabelled"):
        unlabelled = ReferenceBank.build(model, x, layer="features")
        run(bank=unlabelled, reference="others")
    with pytest.raises(CamscopeError, match="cannot merge"):
        bank.merge(ReferenceBank.build(model, [(x, labels)], layer="features.0"))
    # the wrong-weights check can be switched off
    run_other = camscope.explain(_net(seed=3), xq, method="diffcam", layer="features", bank=bank, check_model=False)
    assert torch.isfinite(run_other.raw).all()


def test_methods_listing_and_options() -> None:
    method = camscope.available_methods()["diffcam"]
    assert {"reference", "bank", "regularization", "k"} <= set(method.option_names())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camscope.explain(
            _net(),
            torch.randn(1, 3, 12, 12, dtype=torch.float64),
            method="diffcam",
            layer="features",
            reference=torch.randn(4, 6, dtype=torch.float64),
        )


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    from camscope.models import sample_images
    from camscope.viz.figures import save_image

    root = tmp_path_factory.mktemp("photos")
    photos = sample_images()
    for label, names in {"animals": ["chelsea", "astronaut"], "things": ["coffee", "rocket"]}.items():
        (root / label).mkdir()
        for name in names:
            save_image(root / label / f"{name}.png", photos[name][:256, :256] / 255.0)
    return root


def test_cli_bank_build_info_explain_and_counterfactual(photo_folder, tmp_path, capsys):
    from camscope.cli.app import main

    bank = tmp_path / "photos.bank"
    assert main(["bank", "build", "--data", str(photo_folder), "--out", str(bank), "--size", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in info["classes"]] == ["animals", "things"] and info["samples"] == 4
    assert info["model"] == "efficientnet_lite0" and info["input_size"] == [64, 64]
    assert main(["bank", "info", str(bank), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == info["layer"]

    image = photo_folder / "animals" / "chelsea.png"
    argv = [
        "explain",
        str(image),
        "--size",
        "64",
        "--method",
        "diffcam",
        "--bank",
        str(bank),
        "--out",
        str(tmp_path),
        "--json",
    ]
    assert main(argv + ["--reference", "class:things", "--target", "animals"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["explained_class"] == 0 and report["layer"] == info["layer"]
    assert (tmp_path / "chelsea_diffcam.png").is_file()
    assert main(argv + ["--reference", f"folder:{photo_folder / 'things'}", "--regularization", "0.1"]) == 0
    capsys.readouterr()

    out = tmp_path / "pairs"
    assert (
        main(
            [
                "bank",
                "counterfactual",
                str(image),
                "--bank",
                str(bank),
                "--explained",
                "animals",
                "--versus",
                "things",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    pair = json.loads(capsys.readouterr().out)
    assert pair["explained"]["name"] == "animals" and pair["versus"]["name"] == "things"
    assert (out / "chelsea_why_animals_not_things.png").is_file() and (
        out / "chelsea_why_things_not_animals.png"
    ).is_file()

    merged = tmp_path / "merged.bank"
    assert main(["bank", "merge", str(bank), str(bank), "--out", str(merged), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 8

    for extra, message in [
        (["--reference", "class:zebra"], "has no class 'zebra'"),
        (
            ["--model", "timm:resnet18", "--weights", "none"],
            "built with model 'efficientnet_lite0', not 'timm:resnet18'",
        ),
    ]:
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["explain", str(image), "--size", "64", "--bank", str(bank)]) == 2
    assert "apply to --method diffcam" in capsys.readouterr().err
