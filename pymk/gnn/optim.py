"""Adam for the id embedding's sparse gradients, reading and writing only the batch's rows.

The same update as `torch.optim.SparseAdam` (per-row moments, bias correction by the table's step
count), without its costs on the CPU: SparseAdam coalesces every gradient (a sort and merge of its
indices) and applies moments and weights through sparse masks and sparse additions. A pymk batch looks
up each sampled user once, so its gradient rows are already unique; RowAdam checks that in O(rows)
and coalesces only when they repeat (gradients summed over data-parallel ranks).
"""

from __future__ import annotations

import math

import torch


class RowAdam(torch.optim.Optimizer):
    """Args: params: embedding weights with sparse gradients; lr, betas, eps: as Adam."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid RowAdam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError("RowAdam takes sparse gradients (nn.Embedding(sparse=True))")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["seen"] = torch.zeros(p.shape[0], dtype=torch.int32, device=p.device)
                state["step"] += 1  # as SparseAdam: a step with an empty gradient still counts
                rows, values = grad._indices()[0], grad._values()
                if rows.numel() == 0:
                    continue
                seen = state["seen"]
                seen.index_fill_(0, rows, 0)
                seen.index_add_(0, rows, torch.ones_like(rows, dtype=torch.int32))
                if int(seen.index_select(0, rows).max()) > 1:  # repeated rows: sum them first
                    grad = grad.coalesce()
                    rows, values = grad._indices()[0], grad._values()
                m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(values, alpha=1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(values, values, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                t = state["step"]
                step_size = group["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])).mul_(-step_size))
        return None
