"""PyTorch DDP under torchrun, and single-process fall-backs of the few collectives we need.

``ddpm train`` works unchanged under ``torchrun --nproc_per_node=N -m ddpm train ...``: the
process group is set up from torchrun's own environment variables (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as td


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(kind: str | torch.device | None = None) -> torch.device:
    """Join the process group if torchrun started us; return this process's device: a GPU when
    CUDA is there (or ``kind`` names one), else the CPU (or ``kind`` "cpu"). Under torchrun the
    GPU is its local rank's; alone, the one ``kind`` names ("cuda:1"), else the first."""
    want = torch.device(kind) if kind is not None else None
    use_cuda = torch.cuda.is_available() if want is None else want.type == "cuda"
    if launched_by_torchrun() and not td.is_initialized():
        td.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        if launched_by_torchrun():
            index = int(os.environ.get("LOCAL_RANK", 0))
        else:
            index = want.index if want is not None and want.index is not None else 0
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def teardown() -> None:
    if td.is_initialized():
        td.destroy_process_group()


def world_size() -> int:
    return td.get_world_size() if td.is_initialized() else 1


def rank() -> int:
    return td.get_rank() if td.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def local_slice(n: int) -> slice:
    """This process's share of a global batch of n (which must divide evenly)."""
    w, r = world_size(), rank()
    if n % w:
        raise ValueError(f"the global batch {n} does not divide among {w} processes")
    k = n // w
    return slice(r * k, (r + 1) * k)


def shard(n: int) -> range:
    """This process's contiguous share of items 0 … n−1, in rank order (shares differ by at most one)."""
    w, r = world_size(), rank()
    return range(n * r // w, n * (r + 1) // w)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's x (the numbers of rows may differ) concatenated in rank order, on every
    process, on x's device (x itself when alone). With nccl the exchange goes through this
    process's GPU."""
    if not td.is_initialized():
        return x
    via = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")
    sizes = all_gather_cat(torch.tensor([x.shape[0]], device=via)).tolist()
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=via)
    padded[:x.shape[0]] = x
    parts = all_gather_cat(padded).split(max(sizes))
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).to(x.device)


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of x over the processes (x itself when alone); no host wait."""
    if td.is_initialized():
        x = x.clone()
        td.all_reduce(x, op=td.ReduceOp.MAX)
    return x


def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from every process in rank order (x itself when alone)."""
    if not td.is_initialized():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    td.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def any_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process iff the flag is set on any (e.g. a stop request seen by one of them)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if td.is_initialized():
        td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if td.is_initialized():
        td.barrier()


def check_same_weights(model: torch.nn.Module) -> None:
    """Raise if the processes hold different weights (they must after every step)."""
    if not td.is_initialized():
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
        mine = torch.stack([flat.sum(), (flat * flat).sum(), (flat * torch.arange(flat.numel(), device=flat.device,
                                                                                dtype=torch.float64)).sum()])
    everyone = all_gather_cat(mine[None])  # (world, 3)
    if not torch.equal(everyone.min(0).values, everyone.max(0).values):
        from ..errors import DDPMError

        raise DDPMError(f"the {world_size()} processes hold different weights; training stopped")
