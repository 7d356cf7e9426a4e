"""The distributed helpers in a single process: the world of one rank, and every collective the identity, so
the training code never branches on the world size. (Two ranks: the all-gathered losses in ``test_loss.py``, the
``torchrun`` runs and the DDP gradient accumulation in ``test_train.py``.)"""

from __future__ import annotations

import pytest
import torch

from trainer import distributed


def test_a_single_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed.process_group("cpu") as world:
        assert world == distributed.World(rank=0, local_rank=0, size=1, device=torch.device("cpu"))
        assert world.master and not world.ddp
        assert not distributed.is_distributed() and distributed.world_size() == 1


def test_collectives_are_the_identity_in_a_single_process():
    assert distributed.all_ranks_agree(True) and not distributed.all_ranks_agree(False, op="any")
    assert distributed.all_gather({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast("tokenizer") == "tokenizer"
    assert distributed.mean(torch.tensor(2.5)) == 2.5
    distributed.barrier()
    features = torch.randn(4, 3, requires_grad=True)
    for gather in (distributed.gather_without_grad, distributed.gather_with_grad):
        gathered, offset = gather(features)
        assert gathered is features and offset == 0
    layer = torch.nn.Linear(2, 1)
    layer(torch.ones(1, 2)).sum().backward()
    before = layer.weight.grad.clone()
    distributed.average_gradients(layer)
    assert torch.equal(layer.weight.grad, before)


def test_no_sync_needs_a_ddp_model():
    with pytest.raises(TypeError, match="needs a DistributedDataParallel model, got Linear"):
        distributed.no_sync(torch.nn.Linear(2, 1))
