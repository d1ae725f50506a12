"""DiffCAM: the paper's Figure 1, explain against closed forms, per-example groups, token models, errors, the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import camscope
from camscope.accumulators.reference_bank import ReferenceBank
from camscope.engine.embedding import embed
from camscope.errors import CamscopeError
from camscope.stats.reference_group import ReferenceGroup
from conftest import FeatureNet
from conftest import feature_net as _net


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class FeatureMapNet(nn.Module):
    """A backbone whose output is the feature map itself (no pooling, no head)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 5, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


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
        tokens: dict[str, torch.Tensor] = {}

        def keep(_module: nn.Module, _inputs: object, output: torch.Tensor, store: dict = tokens) -> None:
            store.setdefault("t", output)

        with torch.no_grad():
            handle = model.get_submodule(layer).register_forward_hook(keep)
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
    with pytest.raises(CamscopeError, match=r"layer: the bank holds 'features', here 'features\.0'"):
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
    unlabelled = ReferenceBank.build(model, x, layer="features")
    with pytest.raises(CamscopeError, match="unlabelled"):
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
    (figure,) = report["files"]
    assert all(part in figure for part in ("__diffcam__", "__target-animals", "__ref-class-things", "__bank-"))
    assert (tmp_path / Path(figure).name).is_file()
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
    assert "__why-animals-not-things" in pair["why"] and "__why-things-not-animals" in pair["counterpart"]
    assert Path(pair["why"]).is_file() and Path(pair["counterpart"]).is_file()

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
