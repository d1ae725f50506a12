"""Attention maps of vision transformers (rollout, gradrollout, legrad) against independent references.

Four tiny random-weight image towers: torchvision's ``VisionTransformer``, timm ViTs with four register
tokens (with a class token, and mean-pooled without one), open_clip's and transformers' CLIP image towers
behind a ``CLIPClassifier`` of three prompts. Each reference runs the model with its attention written out
or materialised (the eager path) and takes the papers' formulas plainly: full matrix products for the
rollouts, autograd with respect to the materialised attention for the gradients, each block's tokens read
by the model's head written out here. LeGrad is also checked against torchcam 0.5.0's ``LeGrad``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VisionTransformer

import camscope
from camscope.engine.maps import normalize_maps

Head = Callable[[Tensor], Tensor]


class ExplicitAttention(nn.Module):
    """``nn.MultiheadAttention`` written out, keeping its attention probabilities on the graph."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention
        self.probabilities: Tensor | None = None

    def forward(self, query: Tensor, key: Tensor, value: Tensor, **_: object) -> tuple[Tensor, None]:
        batch, tokens, width = query.shape
        heads = self.attention.num_heads
        qkv = query @ self.attention.in_proj_weight.T + self.attention.in_proj_bias
        q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        self.probabilities = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
        out = (self.probabilities @ v).transpose(1, 2).reshape(batch, tokens, width)
        return self.attention.out_proj(out), None


@dataclass
class Case:
    """A model, its inputs and an explicit forward pass: ``(logits, attention per block, tokens per block)``."""

    model: nn.Module
    x: Tensor
    explicit: Callable[[Tensor], tuple[Tensor, list[Tensor], list[Tensor]]]
    head: Head  # the model's layers after the last block, written out
    prefix: int
    pooling: str = "token"


def _outputs_of(modules: list[nn.Module]) -> tuple[list[Tensor], list[torch.utils.hooks.RemovableHandle]]:
    outputs: list[Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for m in modules]
    return outputs, handles


def _with_explicit_attention(blocks: list[nn.Module], name: str) -> Callable[[nn.Module, Tensor], tuple]:
    explicit = [ExplicitAttention(getattr(block, name)) for block in blocks]
    for block, module in zip(blocks, explicit):
        setattr(block, name, module)

    def run(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        tokens, handles = _outputs_of(blocks)
        try:
            logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
        return logits, [module.probabilities for module in explicit], tokens

    return run


def _torchvision_case() -> Case:
    torch.manual_seed(0)
    model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=6)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts its head at zero
    model.eval()
    reference = copy.deepcopy(model)
    run = _with_explicit_attention(list(reference.encoder.layers), "self_attention")
    return Case(
        model,
        torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
        lambda x: run(reference, x),
        lambda z: reference.heads(reference.encoder.ln(z)[:, 0]),
        prefix=1,
    )


def _timm_case(name: str, pooling: str, prefix: int) -> Case:
    torch.manual_seed(0)
    model = timm.create_model(
        name, pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=6
    )
    nn.init.normal_(model.head.weight, std=0.5)
    if hasattr(model.blocks[0], "ls1"):
        for block in model.blocks:  # DINOv2's layer scale starts at 1e-5: make the blocks count
            block.ls1.gamma.data.fill_(0.5)
            block.ls2.gamma.data.fill_(0.5)
    model.eval()
    reference = copy.deepcopy(model)
    attention: list[Tensor] = []
    for block in reference.blocks:
        block.attn.fused_attn = False  # the explicit path, softmax materialised
        block.attn.attn_drop.register_forward_hook(lambda _m, _i, out: attention.append(out))

    def explicit(x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        attention.clear()
        tokens, handles = _outputs_of(list(reference.blocks))
        logits = reference(x)
        for handle in handles:
            handle.remove()
        return logits, list(attention), tokens

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return Case(model, x, explicit, lambda z: reference.forward_head(reference.norm(z)), prefix, pooling)


def _clip_head(classifier: nn.Module, embed: Callable[[Tensor], Tensor]) -> Head:
    def head(tokens: Tensor) -> Tensor:
        image = F.normalize(embed(tokens), dim=-1)
        return classifier.logit_scale() * image @ classifier.text_features.T

    return head


def _open_clip_case() -> Case:
    open_clip = pytest.importorskip("open_clip")
    from camscope.models.clip import CLIPClassifier

    torch.manual_seed(0)
    clip = open_clip.CLIP(
        embed_dim=8,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=32, patch_size=8, image_size=32, head_width=16, mlp_ratio=2),
        text_cfg=open_clip.CLIPTextCfg(context_length=8, vocab_size=100, width=16, heads=2, layers=1),
    ).eval()
    model = CLIPClassifier(clip, ["a", "b", "c"], text_features=torch.randn(3, 8)).eval()
    reference = copy.deepcopy(model)
    visual = reference.model.visual
    run = _with_explicit_attention(list(visual.transformer.resblocks), "attn")
    head = _clip_head(reference, lambda z: visual.ln_post(z)[:, 0] @ visual.proj)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return Case(model, x, lambda x: run(reference, x), head, prefix=1)


def _hf_clip_case() -> Case:
    transformers = pytest.importorskip("transformers")
    from camscope.models.clip import CLIPClassifier

    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=8,
    )  # fmt: skip
    clip = transformers.CLIPModel(config).eval()
    assert clip.config._attn_implementation == "sdpa"  # camscope reads the fused attention
    model = CLIPClassifier(clip, ["a", "b", "c"], text_features=torch.randn(3, 8)).eval()
    reference = copy.deepcopy(model)
    reference.model.set_attn_implementation("eager")  # the reference materialises it
    vision = reference.model.vision_model

    head = _clip_head(reference, lambda z: reference.model.visual_projection(vision.post_layernorm(z[:, 0])))

    def explicit(x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        out = vision(pixel_values=x, output_attentions=True, output_hidden_states=True)
        logits = head(out.hidden_states[-1])
        torch.testing.assert_close(logits, reference(x))  # the written-out head is the model's
        return logits, list(out.attentions), list(out.hidden_states[1:])

    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return Case(model, x, explicit, head, prefix=1)


CASES: dict[str, Callable[[], Case]] = {
    "torchvision": _torchvision_case,
    "timm-registers": lambda: _timm_case("vit_small_patch14_reg4_dinov2", "token", prefix=5),
    "timm-registers-gap": lambda: _timm_case("vit_little_patch16_reg4_gap_256", "mean", prefix=4),
    "open_clip": _open_clip_case,
    "hf-clip": _hf_clip_case,
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, one_thread: None) -> Case:
    return CASES[request.param]()


# ------------------------------------------------------------------ the references, written plainly


def _row(case: Case, tokens: int) -> Tensor:
    row = torch.zeros(tokens)
    if case.pooling == "token":
        row[0] = 1
    else:
        row[case.prefix :] = 1 / (tokens - case.prefix)
    return row


def _grid(case: Case, values: Tensor) -> Tensor:
    side = math.isqrt(values.shape[1] - case.prefix)
    return values[:, case.prefix :].reshape(values.shape[0], side, side)


def reference_rollout(case: Case) -> Tensor:
    """Abnar and Zuidema: the joint attention ``Â_L ... Â_1``, ``Â = 0.5 mean_h A + 0.5 I``, at the read row."""
    with torch.no_grad():
        _, attention, _ = case.explicit(case.x)
    tokens = attention[0].shape[-1]
    joint = torch.eye(tokens)
    for a in attention:
        joint = (0.5 * a.mean(dim=1) + 0.5 * torch.eye(tokens)) @ joint
    return _grid(case, torch.einsum("n,bnm->bm", _row(case, tokens), joint))


def reference_gradrollout(case: Case, score: Callable[[Tensor], Tensor]) -> Tensor:
    """Chefer et al. (2103.15679) Eq. 5-6: ``R += E_h[(dy/dA * A)^+] R`` from ``R = I``."""
    logits, attention, _ = case.explicit(case.x)
    grads = torch.autograd.grad(score(logits).sum(), attention)
    tokens = attention[0].shape[-1]
    relevance = torch.eye(tokens).expand(case.x.shape[0], tokens, tokens)
    for a, g in zip(attention, grads):
        relevance = relevance + (g * a).clamp(min=0).mean(dim=1) @ relevance
    return _grid(case, torch.einsum("n,bnm->bm", _row(case, tokens), relevance.detach()))


def reference_legrad(case: Case, score: Callable[[Tensor], Tensor], head: Head | None = None) -> Tensor:
    """LeGrad: ``mean_l mean_{h,i} ReLU(d s^l / dA^l)``, ``s^l`` = the score of block l's tokens through the head."""
    logits, attention, tokens = case.explicit(case.x)
    torch.testing.assert_close(case.head(tokens[-1]), logits)  # the written-out head is the model's
    head = head or case.head
    total = 0
    for a, z in zip(attention, tokens):
        (grad,) = torch.autograd.grad(score(head(z)).sum(), a, retain_graph=True)
        total = total + grad.clamp(min=0).mean(dim=(1, 2))
    return _grid(case, total / len(attention))


def _close(actual: Tensor, expected: Tensor, rtol: float = 1e-4) -> float:
    """Max abs difference, asserted below ``rtol`` of the reference's largest value."""
    difference = float((actual - expected).abs().max())
    assert difference <= rtol * float(expected.abs().max()), (difference, float(expected.abs().max()))
    return difference


# ------------------------------------------------------------------ the tests


def test_every_method_equals_its_reference(case: Case) -> None:
    classes = [1, 2, 0]
    score = lambda logits: logits.gather(1, torch.tensor(classes)[:, None])[:, 0]  # noqa: E731
    rollout = camscope.explain(case.model, case.x, method="rollout", target=classes)
    _close(rollout.raw, reference_rollout(case))
    gradrollout = camscope.explain(case.model, case.x, method="gradrollout", target=classes)
    _close(gradrollout.raw, reference_gradrollout(case, score))
    if case.pooling == "token":
        legrad = camscope.explain(case.model, case.x, method="legrad", target=classes)
        assert legrad.raw.shape == (3, 4, 4) and legrad.maps.shape == (3, 32, 32)
        _close(legrad.raw, reference_legrad(case, score))


def test_finer_legrad_compares_classes_or_prompts(case: Case) -> None:
    """A class against a similar class, or (CLIP) a prompt against another prompt: ``y_c - 0.6 y_d`` per block."""
    if case.pooling != "token":
        pytest.skip("one comparison per architecture family")
    versus = lambda logits: logits[:, 0] - 0.6 * logits[:, 1]  # noqa: E731
    finer = camscope.explain(case.model, case.x, method="finer-legrad", target=0, references=[1])
    _close(finer.raw, reference_legrad(case, versus))
    assert finer.targets.references().tolist() == [[1]] * 3
    # Several references, one map each, combined by their maximum before the ReLU.
    other = lambda logits: logits[:, 0] - 0.6 * logits[:, 2]  # noqa: E731
    combined = camscope.explain(
        case.model, case.x, method="finer-legrad", target=0, references=[1, 2], aggregate="max-before-relu"
    )
    _close(combined.raw, torch.maximum(reference_legrad(case, versus), reference_legrad(case, other)))
    # The mean before the ReLU is LeGrad of the averaged comparison; Grad-Rollout takes the same comparisons.
    mean = lambda logits: logits[:, 0] - 0.3 * (logits[:, 1] + logits[:, 2])  # noqa: E731
    averaged = camscope.explain(case.model, case.x, method="finer-legrad", target=0, references=[1, 2])
    _close(averaged.raw, reference_legrad(case, mean))
    gradrollout = camscope.explain(case.model, case.x, method="finer-gradrollout", target=0, references=[1, 2])
    _close(gradrollout.raw, reference_gradrollout(case, mean))


def test_token_mean_readout(case: Case) -> None:
    """``readout="token-mean"``: a class-token head reads the mean of all the tokens (the authors' CLIP code)."""
    if case.pooling != "token":
        with pytest.raises(camscope.CamscopeError, match="does not read a class token"):
            camscope.explain(case.model, case.x, method="legrad", readout="token-mean")
        return
    mean_head = lambda z: case.head(torch.cat([z.mean(dim=1, keepdim=True), z[:, 1:]], dim=1))  # noqa: E731
    explanation = camscope.explain(case.model, case.x, method="legrad", target=2, readout="token-mean")
    expected = reference_legrad(case, lambda logits: logits[:, 2], head=mean_head)
    _close(explanation.raw, expected)
    assert (expected - reference_legrad(case, lambda logits: logits[:, 2])).abs().max() > 1e-3 * expected.max()


def test_legrad_equals_torchcam(one_thread: None) -> None:
    """torchcam 0.5.0's LeGrad on a torchvision ViT: its default head reads the mean token; camscope's readouts."""
    from torchcam.methods import LeGrad as TorchcamLeGrad

    case = _torchvision_case()
    model, x = case.model, case.x
    classes = [4, 1, 3]
    results = {}
    for readout, projection, blocks in [
        ("token-mean", None, None),  # torchcam's own head: heads(ln(tokens.mean(1)))
        ("model", lambda t: model.heads(model.encoder.ln(t)[:, 0]), None),  # the model's head, given to torchcam
        ("model", lambda t: model.heads(model.encoder.ln(t)[:, 0]), [1]),  # the last block only
        ("model", lambda t: model.heads(model.encoder.ln(t)[:, 0]), [0]),  # the first: the last one is not read
    ]:
        layers = [model.encoder.layers[i] for i in blocks] if blocks else list(model.encoder.layers)
        with TorchcamLeGrad(model, layers, score_projection=projection) as extractor:
            scores = model(x)
            peer = extractor(class_idx=classes, scores=scores)[0]
        ours = camscope.explain(model, x, method="legrad", target=classes, readout=readout, blocks=blocks)
        results[(readout, str(blocks))] = float((normalize_maps(ours.raw) - peer).abs().max())
    assert max(results.values()) < 1e-5, results
