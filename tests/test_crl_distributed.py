"""``ClassRectificationLoss(sync_dist=True)`` under torch.distributed: 2 CPU processes, gloo.

Each rank holds one half of a batch; the loss it computes on the gathered batch must equal the
single-process loss on the whole batch, and the gradient reaching its local logits must be the
whole-batch gradient of its rows times the world size (``all_gather``'s backward sums the
gradients of every rank's copy; DDP's averaging then gives the whole-batch gradient).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from smp_imbalance.losses import ClassRectificationLoss

WORLD = 2
CONFIGS = [
    {"criterion": "relative", "mining": "class", "multiclass": False},
    {"criterion": "absolute", "mining": "class", "multiclass": True},
    {"criterion": "distribution", "mining": "instance", "multiclass": False},
]


def make_batch(config: dict, n: int = 12, c: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64)
    if config["multiclass"]:
        target = torch.randint(0, c, (n,), generator=g)
    else:
        target = (torch.rand(n, c, generator=g) < 0.3).to(torch.float64)
    features = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return logits, target, features


def run_loss(config: dict, logits, target, features, sync_dist: bool):
    logits = logits.clone().requires_grad_()
    features = features.clone().requires_grad_()
    loss = ClassRectificationLoss(
        alpha=0.5, criterion=config["criterion"], mining=config["mining"], k=3, sync_dist=sync_dist
    )(logits, target, features if config["mining"] == "instance" else None)
    loss.backward()
    f_grad = features.grad if config["mining"] == "instance" else torch.zeros_like(features)
    return loss.detach(), logits.grad, f_grad


def _worker(rank: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous: a "free" port picked by the parent can be taken by another process on a
    # shared machine before rank 0 binds it
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = []
        for config in CONFIGS:
            logits, target, features = make_batch(config)
            rows = slice(rank * 6, (rank + 1) * 6)
            results.append(run_loss(config, logits[rows], target[rows], features[rows], True))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_gathered_loss_equals_single_process_loss(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    for i, config in enumerate(CONFIGS):
        logits, target, features = make_batch(config)
        loss, grad, f_grad = run_loss(config, logits, target, features, sync_dist=False)
        assert float(loss) > 0
        for rank in range(WORLD):
            r_loss, r_grad, r_f_grad = torch.load(tmp_path / f"rank{rank}.pt")[i]
            rows = slice(rank * 6, (rank + 1) * 6)
            torch.testing.assert_close(r_loss, loss)
            torch.testing.assert_close(r_grad, WORLD * grad[rows])
            torch.testing.assert_close(r_f_grad, WORLD * f_grad[rows])
