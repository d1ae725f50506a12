"""Reference banks: pooled scatters against numpy, batch updates, merges, save/load, shared mode, knn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.errors import CamscopeError
from conftest import FeatureNet
from conftest import feature_net as _net


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _np_scatter(z: np.ndarray) -> np.ndarray:
    centred = z - z.mean(axis=0)
    return centred.T @ centred


def _labelled_data(model: nn.Module, n: int = 60, classes: int = 3, seed: int = 0, size: int = 12):
    x = torch.randn(n, 3, size, size, generator=_generator(seed), dtype=torch.float64)
    labels = torch.arange(n) % classes
    x = x + labels[:, None, None, None].double() * 0.5  # classes differ
    return x, labels


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


def test_build_runs_one_dataset_pass_on_the_models_device_with_clear_errors() -> None:
    model = _net()
    x, labels = _labelled_data(model, n=12)
    whole = ReferenceBank.build(model, [(x, labels)], layer="features", progress=False)
    batched = ReferenceBank.build(model, x, layer="features", batch_size=5, progress=False)  # unlabelled tensor
    assert batched.labels == [-1] and batched.count == 12 and whole.device == torch.device("cpu")
    torch.testing.assert_close(batched.group("all").mean, whole.group("all").mean, rtol=1e-12, atol=1e-12)
    with pytest.raises(CamscopeError, match="gave no batches: a reference bank needs at least one sample"):
        ReferenceBank.build(model, [], layer="features")
    with pytest.raises(CamscopeError, match="batch_size must be a positive integer"):
        ReferenceBank.build(model, x, layer="features", batch_size=0)
    with pytest.raises(CamscopeError, match=r"must be a torch\.nn\.Module"):
        ReferenceBank.build(lambda inputs: inputs, x, layer="features")


def test_summary_counts_every_class_and_names_what_the_bank_describes() -> None:
    labels = torch.tensor([2, 0, 2, -1, 2, 0])
    bank = ReferenceBank(feature_size=3, layer="fc", model={"name": "tiny"}, class_names={0: "cat", 2: "dog"})
    bank.update(torch.randn(6, 3, generator=_generator(4), dtype=torch.float64), labels)
    summary = bank.summary()
    assert json.loads(json.dumps(summary)) == summary  # JSON as it is
    assert (summary["model"], summary["layer"], summary["embedding"]) == ("tiny", "fc", "mean")
    assert (summary["feature_size"], summary["samples"], summary["scatter"]) == (3, 6, bank.scatter_mode)
    expected = [(label, int((labels == label).sum())) for label in bank.labels]
    assert [(entry["label"], entry["count"]) for entry in summary["classes"]] == expected
    assert sorted(entry["label"] for entry in summary["classes"]) == [-1, 0, 2] and sum(n for _, n in expected) == 6
    names = {-1: "<unlabelled>", 0: "cat", 2: "dog"}
    assert [entry["name"] for entry in summary["classes"]] == [names[label] for label in bank.labels]
