"""The largest tensor any ATen op creates inside a block, on any device (a CPU has no
``max_memory_allocated``): whether the [N, V] logits of a loss ever exist, in tests and benchmarks."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LargestTensor(TorchDispatchMode):
    """``with LargestTensor() as largest: ...`` then ``largest.numel``, ``largest.shape`` and
    ``largest.nbytes``: the op output with the most elements, forward and backward alike (views and
    in-place results included, so a view of an existing tensor counts at that tensor's size)."""

    def __init__(self):
        super().__init__()
        self.numel, self.shape, self.nbytes = 0, (), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.numel:
                self.numel, self.shape = tensor.numel(), tuple(tensor.shape)
                self.nbytes = tensor.numel() * tensor.element_size()
        return out
