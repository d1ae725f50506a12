"""Two threads explaining one model object get the single-threaded results, and the model is left as it was."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

import camscope
from camscope.engine.capture import model_lock
from conftest import TinyStridedCNN

CALLS = 6
CASES = [
    ("gradcam", {}),
    ("scorecam", {"batch_size": 4}),
    ("eigencam", {}),
    ("diffcam", {"reference": "tensor"}),
]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return TinyStridedCNN().train()  # train mode: the calls must switch to eval and back, and BatchNorm must not move


def _state(model: nn.Module) -> tuple[list[bool], list[bool], dict[str, torch.Tensor]]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _run(model: nn.Module, method: str, options: dict, inputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    opts = {**options, "reference": reference} if "reference" in options else options
    return camscope.explain(model, inputs, method=method, layer="stage.0", target=[1, 2], **opts).maps


@pytest.mark.parametrize(("method", "options"), CASES, ids=[c[0] for c in CASES])
def test_two_threads_on_one_model_match_single_threaded(one_thread, method: str, options: dict) -> None:
    model = _model()
    generator = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 3, 16, 16, generator=generator) for _ in range(CALLS)]
    reference = torch.randn(2, 3, 16, 16, generator=generator)
    before = _state(model)
    expected = [_run(model, method, options, x, reference) for x in batches]
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def worker(thread: int) -> None:
        start.wait()
        try:
            for i, x in enumerate(batches):
                results[thread, i] = _run(model, method, options, x, reference)
        except BaseException as error:  # noqa: BLE001 - every error of a thread is reported in the test's thread below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (_, i), maps in results.items():
        assert torch.equal(maps, expected[i])
    training, flags, buffers = _state(model)
    assert (training, flags) == before[:2]
    assert all(torch.equal(buffers[k], before[2][k]) for k in buffers)
    assert _hooks(model) == 0


def test_a_user_forward_in_another_thread_is_not_captured(tiny_cnn: nn.Module) -> None:
    """While a call holds the model, a plain forward in another thread passes through the hooks untouched."""
    x = torch.randn(1, 3, 8, 8)
    outputs: list[torch.Tensor] = []
    inside = threading.Event()

    def score(out: torch.Tensor) -> torch.Tensor:
        if not inside.is_set():
            inside.set()
            thread = threading.Thread(target=lambda: outputs.append(tiny_cnn(x)))
            thread.start()
            thread.join()
        return out[:, 0]

    expected = camscope.explain(tiny_cnn, x, layer="features.2", target=0)
    explanation = camscope.explain(tiny_cnn, x, layer="features.2", target=camscope.ScoreTarget(score))
    assert torch.equal(explanation.maps, expected.maps)
    assert len(outputs) == 1 and torch.equal(outputs[0], tiny_cnn(x))
    assert _hooks(tiny_cnn) == 0


def test_model_lock_is_per_model_and_reentrant(tiny_cnn: nn.Module, strided_cnn: nn.Module) -> None:
    assert model_lock(tiny_cnn) is model_lock(tiny_cnn)
    assert model_lock(tiny_cnn) is not model_lock(strided_cnn)
    with model_lock(tiny_cnn), model_lock(tiny_cnn):
        assert camscope.explain(tiny_cnn, torch.randn(1, 3, 8, 8)).maps.shape == (1, 8, 8)
