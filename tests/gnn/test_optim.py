import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.gnn.optim import RowAdam


def _sparse_grad(rows, d, rng):
    values = torch.from_numpy(rng.normal(size=(len(rows), d)).astype(np.float32))
    return torch.sparse_coo_tensor(torch.tensor([rows]), values, (50, d), check_invariants=True)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 49), min_size=0, max_size=30), min_size=1, max_size=6),
       st.integers(0, 10**6))
def test_row_adam_matches_sparse_adam(batches, seed):
    """Any sequence of sparse gradients, unique rows or repeated (data-parallel sums)."""
    rng = np.random.default_rng(seed)
    d = 8
    init = torch.from_numpy(rng.normal(size=(50, d)).astype(np.float32))
    a, b = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    ours, ref = RowAdam([a], lr=0.05), torch.optim.SparseAdam([b], lr=0.05)
    for rows in batches:
        g = _sparse_grad(rows, d, rng)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_row_adam_trains_an_embedding_like_sparse_adam():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(100, 4, sparse=True)
    opt = RowAdam(emb.parameters(), lr=0.1)
    target = torch.randn(100, 4)
    for _ in range(200):
        idx = torch.randperm(100)[:30]
        loss = ((emb(idx) - target[idx]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(((emb.weight.detach() - target) ** 2).mean()) < 1e-2
    with pytest.raises(ValueError):
        RowAdam(emb.parameters(), lr=0)
