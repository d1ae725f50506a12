"""CLIP: prompt logits and prompt-vs-prompt maps on tiny randomly initialised CLIP models.

No weights are downloaded: models are built from small configs (transformers CLIPModel
with a ViT tower; open_clip with a ViT and a ResNet tower). Each map is checked
against a Grad-CAM written here with autograd on the scaled cosine similarity.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import camscope
from camscope import Finer
from camscope.errors import CamscopeError
from camscope.models.clip import CLIPClassifier, clip_backend, load_clip

transformers = pytest.importorskip("transformers")

PROMPTS = ["red epaulets", "bird", "a photo of a cat"]
WORDS = sorted({word for prompt in PROMPTS + ["a dog", "tabby"] for word in prompt.split()})
VOCAB = {"[PAD]": 0, "[UNK]": 1, "<start>": 2, "<end>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}


def _word_tokenizer():
    """A word-level tokenizers tokenizer wrapped for transformers (no vocabulary download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>", special_tokens=[("<start>", 2), ("<end>", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", bos_token="<start>", eos_token="<end>"
    )


def _hf_clip() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(VOCAB),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        ),
        vision_config=dict(
            image_size=16,
            patch_size=4,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        projection_dim=8,
    )
    return transformers.CLIPModel(config).eval()


@pytest.fixture
def hf_clip() -> nn.Module:
    return _hf_clip()


@pytest.fixture
def pixels() -> Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def _grad_cam_by_hand(
    model: nn.Module,
    layer: nn.Module,
    image_features,
    text: Tensor,
    x: Tensor,
    explained: int,
    references: list[int],
    gamma: float,
    tokens: bool,
) -> Tensor:
    """Grad-CAM of mean_t (y_c - gamma y_{d_t}) with y = exp(t) <f(x)/|f(x)|, g/|g|>, written out by hand."""
    captured: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: object, output):
        tensor = output[0] if isinstance(output, tuple) else output
        leaf = tensor.detach().requires_grad_(True)
        captured["A"] = leaf
        return (leaf.clone(), *output[1:]) if isinstance(output, tuple) else leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            image = image_features(x)
            cosine = (image / image.norm(dim=-1, keepdim=True)) @ (text / text.norm(dim=-1, keepdim=True)).T
            logits = model.logit_scale.exp() * cosine
            score = sum(logits[:, explained] - gamma * logits[:, d] for d in references) / len(references)
            (grads,) = torch.autograd.grad(score.sum(), captured["A"])
    finally:
        handle.remove()
    activations = captured["A"].detach()
    if tokens:  # [B, 1 + h*w, K] -> [B, K, h, w], class token dropped
        side = int((activations.shape[1] - 1) ** 0.5)
        activations = activations[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, side, side)
        grads = grads[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, side, side)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1)


# ---------------------------------------------------------------- transformers


def test_transformers_logits_are_the_models_scaled_cosine(hf_clip: nn.Module, pixels: Tensor) -> None:
    tokenizer = _word_tokenizer()
    classifier = CLIPClassifier(hf_clip, PROMPTS, tokenizer=tokenizer)
    assert classifier.backend == "transformers" and classifier.prompts == PROMPTS
    encoded = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf_clip(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], pixel_values=pixels
        )
        ours = classifier(pixels)
    torch.testing.assert_close(ours, expected.logits_per_image, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[:, 0], ours[:, 1])  # distinct prompts give distinct logits


def test_transformers_vit_maps_match_hand_written_autograd(hf_clip: nn.Module, pixels: Tensor) -> None:
    tokenizer = _word_tokenizer()
    classifier = CLIPClassifier(hf_clip, PROMPTS, tokenizer=tokenizer)
    layer_name = "model.vision_model.encoder.layers.1.layer_norm1"
    layer = hf_clip.vision_model.encoder.layers[1].layer_norm1
    encoded = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = hf_clip.text_projection(hf_clip.text_model(**encoded).pooler_output)

    def image_features(x: Tensor) -> Tensor:
        return hf_clip.visual_projection(hf_clip.vision_model(pixel_values=x).pooler_output)

    base = camscope.explain(classifier, pixels, method="gradcam", target=0)
    assert base.layer == layer_name  # the default layer of a ViT tower
    expected = _grad_cam_by_hand(hf_clip, layer, image_features, text, pixels, 0, [0], 0.0, tokens=True)
    torch.testing.assert_close(base.raw, expected, rtol=1e-4, atol=1e-6)
    # "red epaulets" versus "bird"
    finer = camscope.explain(classifier, pixels, method="gradcam", target=Finer(explained=0, references=[1], gamma=0.6))
    expected = _grad_cam_by_hand(hf_clip, layer, image_features, text, pixels, 0, [1], 0.6, tokens=True)
    torch.testing.assert_close(finer.raw, expected, rtol=1e-4, atol=1e-6)
    # automatic references among the other prompts, through the shortcut method
    shortcut = camscope.explain(classifier, pixels, method="finer-gradcam", target=0, gamma=1.0)
    refs = shortcut.targets.references()
    assert refs.shape == (2, 2) and not (refs == 0).any()
    expected = _grad_cam_by_hand(hf_clip, layer, image_features, text, pixels, 0, [1, 2], 1.0, tokens=True)
    torch.testing.assert_close(shortcut.raw, expected, rtol=1e-4, atol=1e-6)


def test_text_features_and_prompt_similarity(hf_clip: nn.Module, pixels: Tensor) -> None:
    torch.manual_seed(1)
    features = torch.randn(3, 8)
    classifier = CLIPClassifier(hf_clip, ["x", "y", "z"], text_features=features)
    torch.testing.assert_close(classifier.text_features, F.normalize(features, dim=-1))
    similarity = camscope.class_similarity(classifier)
    assert similarity.names == ["x", "y", "z"]
    torch.testing.assert_close(similarity.matrix, F.normalize(features, dim=-1) @ F.normalize(features, dim=-1).T)
    # weight similarity picks references among the prompts
    explanation = camscope.explain(
        classifier, pixels, method="finer-gradcam", target=0, select="weight-similarity", references=1
    )
    assert explanation.targets.references()[:, 0].tolist() == [int(similarity.matrix[0, 1:].argmax()) + 1] * 2


def test_errors(hf_clip: nn.Module) -> None:
    with pytest.raises(CamscopeError, match="not a CLIP model"):
        clip_backend(nn.Linear(2, 2))
    with pytest.raises(CamscopeError, match="at least one text prompt"):
        CLIPClassifier(hf_clip, [], tokenizer=_word_tokenizer())
    with pytest.raises(CamscopeError, match="2 prompts"):
        CLIPClassifier(hf_clip, ["a", "b"], text_features=torch.ones(3, 8))
    with pytest.raises(CamscopeError, match="tokenizer"):
        CLIPClassifier(hf_clip, ["a"])  # built from a config: no name to load a tokenizer from
    with pytest.raises(CamscopeError, match="no such model folder"):
        load_clip("./no/such/clip-folder")


@pytest.fixture
def saved_clip(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-clip"
    _hf_clip().save_pretrained(folder)
    _word_tokenizer().save_pretrained(folder)
    return folder


def test_load_clip_from_a_folder_and_the_prompts_cli(saved_clip: Path, tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from camscope.cli.app import main

    loaded = load_clip(str(saved_clip))
    assert loaded.config.input_size == 16
    classifier = loaded.classifier(["red epaulets", "bird"])
    assert classifier(torch.zeros(1, 3, 16, 16)).shape == (1, 2)
    image = tmp_path / "bird.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    code = main(
        [
            "prompts",
            str(image),
            "--model",
            str(saved_clip),
            "--prompt",
            "red epaulets",
            "--versus",
            "bird",
            "--out",
            str(out),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (entry,) = json.loads(captured.out)
    assert [p["prompt"] for p in entry["prompts"]] == ["red epaulets", "bird"]
    assert abs(sum(p["probability"] for p in entry["prompts"]) - 1) < 1e-5
    assert entry["compared"] == {"red epaulets": ["bird"]}
    assert Path(entry["files"][0]).read_bytes()[:4] == b"\x89PNG"
    assert (
        main(["prompts", str(image), "--model", str(saved_clip), "--prompt", "bird", "--method", "finer-gradcam"]) == 2
    )
    assert "base method" in capsys.readouterr().err


def test_a_local_clip_folder_is_read_without_any_network_request(saved_clip: Path, monkeypatch) -> None:
    import socket

    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:  # every lookup or connection is recorded and fails at once
        attempts.append(args)
        raise OSError("network disabled in this test")

    # A request to the hub resolves the host name first: with no network that lookup, not connect, fails.
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    loaded = load_clip(str(saved_clip))
    loaded.classifier(["bird"])
    assert attempts == []


def test_every_from_pretrained_of_a_local_folder_says_local_files_only(saved_clip: Path, monkeypatch) -> None:
    """Whatever a transformers version does for a folder, ``local_files_only`` forbids it the hub.

    (Some versions look a local tokenizer up on the hub too; without network each lookup is retried.)
    """
    calls: list[tuple[str, object]] = []
    for name in ("AutoModel", "AutoTokenizer", "AutoImageProcessor"):
        auto = getattr(transformers, name)
        original = auto.from_pretrained.__func__

        def recording(cls, source, *args, _name=name, _original=original, **kwargs):
            calls.append((_name, kwargs.get("local_files_only")))
            return _original(cls, source, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(recording))
    loaded = load_clip(str(saved_clip))
    loaded.classifier(["bird"])
    assert {name for name, _ in calls} == {"AutoModel", "AutoTokenizer", "AutoImageProcessor"}
    assert all(local is True for _, local in calls), calls


# ---------------------------------------------------------------- open_clip


def _open_clip_text_cfg(open_clip):
    return open_clip.CLIPTextCfg(context_length=8, vocab_size=49408, width=16, heads=2, layers=1)


def test_open_clip_vit_and_resnet_maps_match_hand_written_autograd() -> None:
    open_clip = pytest.importorskip("open_clip")
    from open_clip.tokenizer import SimpleTokenizer

    torch.manual_seed(0)
    vit = open_clip.CLIP(
        embed_dim=8,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=16, patch_size=4, image_size=16, head_width=8, mlp_ratio=2),
        text_cfg=_open_clip_text_cfg(open_clip),
    ).eval()
    resnet = open_clip.CLIP(
        embed_dim=8,
        vision_cfg=open_clip.CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=64, head_width=8),
        text_cfg=_open_clip_text_cfg(open_clip),
    ).eval()
    tokens = SimpleTokenizer(context_length=8)(PROMPTS)
    cases = [
        (
            vit,
            torch.randn(2, 3, 16, 16),
            "model.visual.transformer.resblocks.1.ln_1",
            vit.visual.transformer.resblocks[1].ln_1,
            True,
        ),
        (resnet, torch.randn(2, 3, 64, 64), "model.visual.layer4", resnet.visual.layer4, False),
    ]
    for model, x, layer_name, layer, is_tokens in cases:
        classifier = CLIPClassifier(model, PROMPTS)  # default tokenizer: open_clip's bundled BPE
        assert classifier.backend == "open_clip"
        with torch.no_grad():
            image, text, scale = model(x, tokens)[:3]  # open_clip normalises both
            torch.testing.assert_close(classifier(x), scale * image @ text.T, rtol=1e-5, atol=1e-5)
            text = model.encode_text(tokens)
        explanation = camscope.explain(classifier, x, method="finer-gradcam", target=2, references=[0, 1], gamma=0.6)
        assert explanation.layer == layer_name
        expected = _grad_cam_by_hand(model, layer, model.encode_image, text, x, 2, [0, 1], 0.6, tokens=is_tokens)
        torch.testing.assert_close(explanation.raw, expected, rtol=1e-4, atol=1e-6)
