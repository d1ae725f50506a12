"""The attention methods as a hostile user meets them: wrong models, wrong options, in-place ops, threads, dtypes.

Also: the sanity check and the localisation metrics run on them. Every call leaves no hook on the model
and its modes and flags as they were.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer

import camscope
from camscope.errors import CamscopeError
from camscope.methods.attention import AttentionMethod
from camscope.metrics import auprc, energy_pointing_game, iou, pointing_game, sanity_check

ATTENTION_METHODS = ["gradrollout", "legrad", "rollout"]


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _vit(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=6)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.to(dtype).eval()


@pytest.fixture(scope="module")
def vit(one_thread: None) -> nn.Module:
    return _vit()


@pytest.fixture(scope="module")
def x() -> Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


class Block(nn.Module):
    """A pre-norm block; ``in_place`` scales the attention output and adds the residual in place."""

    def __init__(self, dim: int, in_place: bool, attention: nn.Module | None = None, **mha: object) -> None:
        super().__init__()
        self.in_place = in_place
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = attention or nn.MultiheadAttention(dim, 2, batch_first=True, **mha)  # type: ignore[arg-type]
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=in_place), nn.Linear(2 * dim, dim))
        self.mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        out = self.attn(y, y, y, need_weights=False, attn_mask=self.mask)[0]
        if self.in_place:
            out.mul_(0.7)
            x = x + out
            h = self.mlp(self.norm2(x))
            h += x
            return h
        x = x + out * 0.7
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    """Patch embedding, a class token, two blocks, a class-token head (16 px images, 4 px patches)."""

    def __init__(self, in_place: bool = False, shared: bool = False, mix_samples: bool = False) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        first = Block(16, in_place)
        self.blocks = nn.Sequential(first, Block(16, in_place, attention=first.attn if shared else None))
        self.norm, self.head = nn.LayerNorm(16), nn.Linear(16, 5)
        self.mix_samples = mix_samples

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.blocks(torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1))
        logits = self.head(self.norm(tokens)[:, 0])
        # A head that reshapes by the batch it saw at the input (LeGrad's extra rows cannot pass).
        return logits.reshape(x.shape[0], -1)[:, :5] if self.mix_samples else logits


def _small(**kwargs: bool) -> nn.Module:
    torch.manual_seed(0)
    return SmallViT(**kwargs).eval()


SMALL_X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def test_the_methods_are_registered_with_their_names() -> None:
    methods = camscope.available_methods()
    names = ["rollout", "gradrollout", "legrad", "finer-legrad", "finer-gradrollout"]
    assert all(issubclass(methods[name], AttentionMethod) for name in names)
    shown = [camscope.engine.method.display_name(name) for name in names]
    assert shown == ["Attention Rollout", "Grad-Rollout", "LeGrad", "Finer-CAM (LeGrad)", "Finer-CAM (Grad-Rollout)"]


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_a_cnn_is_a_clear_error(one_thread: None, tiny_cnn: nn.Module, images: Tensor, method: str) -> None:
    with pytest.raises(CamscopeError, match=r"runs no supported attention module.*gradcam"):
        camscope.explain(tiny_cnn, images, method=method)
    assert hook_count(tiny_cnn) == 0


def test_unsupported_attention_is_named(one_thread: None) -> None:
    class WindowAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 16)

        def forward(self, query: Tensor, *_: object, **__: object) -> tuple[Tensor, None]:
            return self.proj(query), None

    model = _small()
    for block in model.blocks:
        block.attn = WindowAttention()
    with pytest.raises(CamscopeError, match=r"not supported: WindowAttention \(blocks.0.attn\)"):
        camscope.explain(model, SMALL_X, method="legrad")


@pytest.mark.parametrize(
    "blocks, message",
    [(3, "has 2 attention blocks"), ([5], "out of range"), ([0, -2], "twice"), (0, "at least 1"), ("1", "list of")],
)
def test_bad_blocks(one_thread: None, vit: nn.Module, x: Tensor, blocks: object, message: str) -> None:
    with pytest.raises(CamscopeError, match=message):
        camscope.explain(vit, x, method="legrad", blocks=blocks)
    assert hook_count(vit) == 0


def test_blocks_select_the_rolled_out_blocks(vit: nn.Module, x: Tensor) -> None:
    last = camscope.explain(vit, x, method="rollout", blocks=1).raw
    listed = camscope.explain(vit, x, method="rollout", blocks=[-1]).raw
    everything = camscope.explain(vit, x, method="rollout").raw
    torch.testing.assert_close(last, listed)
    assert not torch.allclose(last, everything)


def test_rollout_refuses_comparisons(vit: nn.Module, x: Tensor) -> None:
    with pytest.raises(CamscopeError, match="does not depend on the explained class"):
        camscope.explain(vit, x, method="rollout", target=camscope.Finer(references=[1]))


@pytest.mark.parametrize(
    "change, message",
    [
        ("sequence-first", "batch_first=False"),
        ("mask", "attention mask"),
        ("shared", "runs 2 times"),
        ("dropout", "dropout"),
        ("mix-samples", "treat samples independently"),
    ],
)
def test_unsupported_uses_are_clear_errors(one_thread: None, change: str, message: str) -> None:
    model = _small(shared=change == "shared", mix_samples=change == "mix-samples")
    options: dict = {}
    if change == "sequence-first":
        for block in model.blocks:
            block.attn = nn.MultiheadAttention(16, 2, batch_first=False)
    if change == "mask":
        for block in model.blocks:
            block.mask = torch.zeros(17, 17, dtype=torch.bool)
    if change == "dropout":
        model.blocks[0].attn.dropout = 0.1
        model.train()
        options["eval_mode"] = False
    modes = [m.training for m in model.modules()]
    with pytest.raises(CamscopeError, match=message):
        camscope.explain(model, SMALL_X, method="legrad", target=[0, 1], **options)
    assert hook_count(model) == 0 and [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_in_place_ops_around_the_attention_do_not_change_the_map(one_thread: None, method: str) -> None:
    in_place, out_of_place = _small(in_place=True), _small()
    out_of_place.load_state_dict(in_place.state_dict())
    expected = camscope.explain(out_of_place, SMALL_X, method=method, target=[1, 3]).raw
    got = camscope.explain(in_place, SMALL_X, method=method, target=[1, 3]).raw
    torch.testing.assert_close(got, expected)
    assert hook_count(in_place) == 0


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_frozen_parameters_no_grad_inference_mode_and_flags(vit: nn.Module, x: Tensor, method: str) -> None:
    expected = camscope.explain(vit, x, method=method, target=[0, 5]).raw
    for parameter in vit.parameters():
        parameter.requires_grad_(False)
    try:
        with torch.no_grad():
            got = camscope.explain(vit, x, method=method, target=[0, 5]).raw
        with torch.inference_mode():
            torch.testing.assert_close(camscope.explain(vit, x.clone(), method=method, target=[0, 5]).raw, got)
        assert not any(parameter.requires_grad for parameter in vit.parameters())
    finally:
        for parameter in vit.parameters():
            parameter.requires_grad_(True)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_other_dtypes(one_thread: None, x: Tensor, method: str) -> None:
    reference = camscope.explain(_vit(), x, method=method, target=[2, 4]).raw
    double = camscope.explain(_vit(torch.float64), x.double(), method=method, target=[2, 4])
    assert double.raw.dtype == torch.float64
    torch.testing.assert_close(double.raw.float(), reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
    half = camscope.explain(_vit(torch.bfloat16), x.bfloat16(), method=method, target=[2, 4])
    assert bool(torch.isfinite(half.maps).all()) and half.raw.dtype == torch.bfloat16


def test_two_threads_on_one_model(vit: nn.Module, x: Tensor) -> None:
    expected = {method: camscope.explain(vit, x, method=method, target=[1, 2]).raw for method in ATTENTION_METHODS}
    results: dict[str, Tensor] = {}
    errors: list[BaseException] = []

    def run(method: str) -> None:
        try:
            results[method] = camscope.explain(vit, x, method=method, target=[1, 2]).raw
        except BaseException as error:  # noqa: BLE001 - every error of a thread is reported in the test's thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(method,)) for method in ATTENTION_METHODS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and hook_count(vit) == 0
    for method in ATTENTION_METHODS:
        torch.testing.assert_close(results[method], expected[method])


class NaNAfterTheBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vit = _small()

    def forward(self, x: Tensor) -> Tensor:
        logits = self.vit(x)
        return logits / (logits - logits)  # 0 / 0 in the head


def test_nan_scores_are_an_error_and_rollout_stays_exact(one_thread: None) -> None:
    model = NaNAfterTheBlocks().eval()
    for method in ("legrad", "gradrollout"):
        with pytest.raises(CamscopeError, match="not finite"):
            camscope.explain(model, SMALL_X, method=method, target=[0, 2])
    rollout = camscope.explain(model, SMALL_X, method="rollout", target=[0, 2])  # reads no scores
    assert bool(torch.isfinite(rollout.raw).all()) and hook_count(model) == 0


def test_sanity_check_runs_on_a_vit(vit: nn.Module, x: Tensor) -> None:
    """Rollout ignores the head (its map survives the head's randomisation); LeGrad and Grad-Rollout do not."""
    results = {method: sanity_check(vit, x, method=method, group="block") for method in ATTENTION_METHODS}
    assert results["legrad"].params["layers"] == ["heads", "encoder", "conv_proj"]
    after_head = {method: result.curves["spearman"][:, 0] for method, result in results.items()}
    torch.testing.assert_close(after_head["rollout"], torch.ones(2))
    assert bool((after_head["legrad"] < 0.99).all()) and bool((after_head["gradrollout"] < 0.99).all())
    assert results["legrad"].params["verdict"] == "pass"
    assert hook_count(vit) == 0


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_localisation_metrics_read_the_maps(vit: nn.Module, x: Tensor, method: str) -> None:
    explanation = camscope.explain(vit, x, method=method, target=[3, 1])
    maps = explanation.maps
    assert iou(explanation, masks=maps >= 0.5).values["iou"].tolist() == [1.0, 1.0]
    peaks = [divmod(int(m.argmax()), m.shape[1]) for m in maps]
    boxes = torch.tensor([[col, row, col + 1, row + 1] for row, col in peaks])
    assert pointing_game(explanation, boxes=boxes, tolerance=0.5).values["hit"].tolist() == [1.0, 1.0]
    whole = torch.tensor([[0, 0, 32, 32]] * 2)
    torch.testing.assert_close(energy_pointing_game(explanation, boxes=whole).values["proportion"], torch.ones(2))
    torch.testing.assert_close(auprc(explanation, masks=maps >= 0.5).values["auprc"], torch.ones(2))


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_empty_and_non_finite_inputs(vit: nn.Module, x: Tensor, method: str) -> None:
    with pytest.raises(CamscopeError, match="empty batch"):
        camscope.explain(vit, x[:0], method=method)
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    with pytest.raises(CamscopeError, match="NaN or infinite"):
        camscope.explain(vit, poisoned, method=method)
    assert hook_count(vit) == 0


class PooledViT(SmallViT):
    """A head that pools the tokens with a learned query (cross-attention): part of the head, not a block."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, 16))
        self.pool = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.norm(self.blocks(torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)))
        pooled = self.pool(self.query.expand(tokens.shape[0], -1, -1), tokens, tokens, need_weights=False)[0]
        return self.head(pooled[:, 0])


def test_a_cross_attention_pooler_belongs_to_the_head(one_thread: None) -> None:
    from camscope.methods.attention import attention_layers

    torch.manual_seed(0)
    model = PooledViT().eval()
    assert attention_layers(model, SMALL_X) == ["blocks.0.attn", "blocks.1.attn"]
    explanation = camscope.explain(model, SMALL_X, method="legrad", target=[1, 2])
    assert explanation.raw.shape == (2, 4, 4) and bool(torch.isfinite(explanation.raw).all())
    assert float(explanation.raw.abs().max()) > 0


def test_an_attention_pooled_timm_head(one_thread: None) -> None:
    """timm's attention pooling (global_pool='map'): rollouts need a token they can follow; LeGrad reads the pooler."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_so150m_patch16_reg4_map_256", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2,
        num_heads=2, num_classes=5,
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for method in ("rollout", "gradrollout"):
        with pytest.raises(CamscopeError, match=r"attention pooling \(global_pool='map'\): use legrad"):
            camscope.explain(model, x, method=method)
    assert bool(torch.isfinite(camscope.explain(model, x, method="legrad").raw).all())
    assert hook_count(model) == 0


class WithBias(nn.Module):
    """A model of two inputs: an image and a per-sample bias added to the logits."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.vit(x) + bias


def test_a_model_of_several_inputs(vit: nn.Module, x: Tensor) -> None:
    """The image is explained, the other input held fixed; LeGrad's extra rows cannot meet a per-sample input."""
    model = WithBias(vit).eval()
    bias = torch.randn(2, 6, generator=torch.Generator().manual_seed(4))
    for method in ("rollout", "gradrollout"):
        alone = camscope.explain(vit, x, method=method, target=[1, 4]).raw
        torch.testing.assert_close(camscope.explain(model, (x, bias), method=method, target=[1, 4]).raw, alone)
    with pytest.raises(CamscopeError, match="as extra rows of the batch"):
        camscope.explain(model, (x, bias), method="legrad", target=[1, 4])
    assert hook_count(model) == 0


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_the_map_costs_the_explainers_one_forward_pass(vit: nn.Module, x: Tensor, method: str) -> None:
    """The attention is read in the explainer's own pass: no second pass of the model (LeGrad's rows ride along)."""
    camscope.explain(vit, x, method=method, target=[1, 2])  # the layer choices are traced once per input shape
    calls: list[int] = []
    handle = vit.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        explanation = camscope.explain(vit, x, method=method, target=[1, 2])
    finally:
        handle.remove()
    assert calls == [2]
    assert explanation.logits.shape == (2, 6) and explanation.activations.shape[0] == 2
    torch.testing.assert_close(explanation.logits, vit(x).detach())


def test_the_explanations_layer_names_the_attention_modules_read(vit: nn.Module, x: Tensor, tmp_path: Path) -> None:
    names = [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    assert camscope.explain(vit, x, method="rollout").layer == names
    legrad = camscope.explain(vit, x, method="legrad", blocks=[1], layer="encoder.ln")
    assert legrad.layer == names[1]
    assert camscope.explain(vit, x, method="finer-gradrollout", target=[1, 2], blocks=1).layer == names[1]
    assert camscope.Explanation.load(legrad.save(tmp_path / "legrad.safetensors")).layer == names[1]
    with pytest.raises(CamscopeError, match=r"reads the attention of the model.s blocks .* give one layer"):
        camscope.explain(vit, x, method="gradrollout", layer=["encoder.layers.encoder_layer_0.ln_1", "encoder.ln"])
    assert hook_count(vit) == 0


class InPlaceHead(nn.Module):
    """A head whose sigmoid output is scaled in place: torch cannot differentiate it (its backward needs the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = _small()

    def forward(self, x: Tensor) -> Tensor:
        probabilities = self.vit(x).sigmoid()
        probabilities.mul_(2.0)
        return probabilities


@pytest.mark.parametrize("method", ["legrad", "gradrollout"])
def test_a_model_torch_cannot_differentiate_is_one_clear_error(one_thread: None, method: str) -> None:
    model = InPlaceHead().eval()
    with pytest.raises(CamscopeError, match=r"in-place operation .* modified the output of Sigmoid.*method='scorecam'"):
        camscope.explain(model, SMALL_X, method=method, target=[0, 2])
    assert hook_count(model) == 0
    assert bool(torch.isfinite(camscope.explain(model, SMALL_X, method="rollout").raw).all())
