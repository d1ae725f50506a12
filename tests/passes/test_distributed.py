"""Dataset passes split over two gloo processes equal the single-process pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import camscope
from camscope.errors import CamscopeError
from camscope.passes.distributed import Shard, current_shard, merge_across_ranks, resolve_device
from camscope.stats.reference_bank import ReferenceBank


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


class _Counting(nn.Module):
    def __init__(self, net: nn.Module, seen: list[int]) -> None:
        super().__init__()
        self.net, self.seen = net, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return self.net(x)


class _Iterable:
    """Batches without a length: batch i goes to rank i % world."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self.batches


def _datasets() -> dict[str, object]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, 10, 10, generator=generator)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    return {
        "tensor": x,
        "map-style": TensorDataset(x, y),
        "list": [(x[i : i + 2], y[i : i + 2]) for i in range(0, 7, 2)],
        "loader": DataLoader(TensorDataset(x, y), batch_size=3),
        "iterable": _Iterable([(x[i : i + 2], y[i : i + 2]) for i in range(0, 7, 2)]),
        "one batch": TensorDataset(x[:2], y[:2]),  # rank 1 gets nothing
    }


def _check_bank(distributed: ReferenceBank, single: ReferenceBank) -> None:
    assert distributed.labels == single.labels
    assert torch.equal(distributed.counts, single.counts)
    torch.testing.assert_close(distributed.moments.means, single.moments.means, rtol=1e-12, atol=1e-12)
    a, b = distributed.state_dict(), single.state_dict()
    key = "scatters" if "scatters" in b else "within"
    torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)


def _check_analysis(distributed: camscope.Analysis, single: camscope.Analysis) -> None:
    assert distributed.n_samples == single.n_samples
    for name in ("values", "image_max", "image_min"):
        a, b = getattr(distributed, name).state_dict(), getattr(single, name).state_dict()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (name, key)
    assert torch.equal(distributed.class_counts, single.class_counts)
    torch.testing.assert_close(distributed.importance, single.importance, rtol=1e-12, atol=1e-12)


def _worker(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        assert current_shard(None, torch.device("cpu")) == Shard(rank, world)
        seen: list[int] = []
        camscope.analyze(
            _Counting(_model(), seen), torch.randn(7, 3, 10, 10), layer="net.0", batch_size=2, progress=False
        )
        assert seen == ([2, 2] if rank == 0 else [2, 1])  # this rank's batches only
        other = _model()
        if rank == 1:
            with torch.no_grad():
                other[0].weight.add_(1.0)
        with pytest.raises(CamscopeError, match="rank 1 runs another building reference bank pass than rank 0"):
            ReferenceBank.build(other, torch.randn(4, 3, 8, 8), "0", progress=False)
        model = _model()
        data = _datasets()["map-style"]
        checkpoint = Path(init_file).with_name("bank.ckpt")
        saved = ReferenceBank.build(
            model, data, "0", batch_size=2, checkpoint=checkpoint, checkpoint_every=1, progress=False
        )
        assert Path(init_file).with_name(f"bank.rank{rank}-of-{world}.ckpt").is_file() and not checkpoint.exists()
        resumed = ReferenceBank.build(
            model, data, "0", batch_size=2, checkpoint=checkpoint, resume=True, progress=False
        )
        _check_bank(resumed, saved)
        for name, data in _datasets().items():
            options = dict(batch_size=2, progress=False)
            bank = ReferenceBank.build(model, data, "0", **options)
            single_bank = ReferenceBank.build(model, data, "0", distributed=False, **options)
            _check_bank(bank, single_bank)
            analysis = camscope.analyze(model, data, layer="0", profiles=True, **options)
            single = camscope.analyze(model, data, layer="0", profiles=True, distributed=False, **options)
            _check_analysis(analysis, single)
            # in dataset order, interleaved batches of an iterable (batch i on rank i % 2) included
            assert torch.equal(analysis.profiles, single.profiles), name
            assert torch.equal(analysis.profile_ids, single.profile_ids), name
            evaluation = dict(methods=["gradcam"], metrics=["sparseness", "deletion"], layer="0", **options)
            report = camscope.evaluate(model, data, **evaluation)
            alone = camscope.evaluate(model, data, distributed=False, **evaluation)
            assert report.samples == alone.samples, name
            for metric in ("sparseness", "deletion"):
                ours, theirs = report.results["gradcam"][metric], alone.results["gradcam"][metric]
                for key in theirs.values:
                    assert torch.equal(ours.values[key], theirs.values[key]), (name, metric, key)
            if name == "one batch":
                continue  # a correlation needs three images
            together = camscope.metrics.consistency(model, data, layer="0", **options)
            apart = camscope.metrics.consistency(model, data, layer="0", distributed=False, **options)
            assert torch.equal(together.cam_sums, apart.cam_sums) and torch.equal(together.logits, apart.logits)
            if name == "tensor":
                continue  # unlabelled: no accuracy
            masks = {"all": None, "half": torch.tensor([True, False, True, False])}
            accuracy = camscope.metrics.feature_masking_accuracy(model, data, "0", masks, **options)
            assert accuracy == camscope.metrics.feature_masking_accuracy(
                model, data, "0", masks, distributed=False, **options
            )
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


def test_shards_cover_every_batch_once() -> None:
    for batches in range(0, 9):
        for world in (1, 2, 3):
            ranges = [Shard(rank, world).batch_range(batches) for rank in range(world)]
            covered = [i for first, stop in ranges for i in range(first, stop)]
            assert covered == list(range(batches))
            owned = [[i for i in range(batches) if Shard(r, world).owns_iterated(i)] for r in range(world)]
            assert sorted(i for part in owned for i in part) == list(range(batches))


def test_single_process_without_a_group() -> None:
    assert current_shard(None, torch.device("cpu")) == Shard(0, 1)
    assert merge_across_ranks("state", lambda s, d: s, Shard(0, 1), torch.device("cpu")) == "state"


def test_distributed_true_without_torchrun_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CamscopeError, match="torchrun"):
        ReferenceBank.build(_model(), torch.randn(2, 3, 8, 8), "0", distributed=True, progress=False)


def test_device_resolution_under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    # a machine with two GPUs (the devices are checked to exist: camscope.models.check_device)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) is None
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(CamscopeError, match="not a device"):
        resolve_device("gpu7")
    monkeypatch.setenv("LOCAL_RANK", "5")  # more processes than GPUs: one line, not a CUDA traceback
    with pytest.raises(CamscopeError, match=r"device='cuda:5': this machine has 2 CUDA GPU\(s\)"):
        resolve_device("cuda", distributed=True)
