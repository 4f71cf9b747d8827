"""The CPU input-dropout mask: the keep rate and scale of dropout, repeatable under torch's seed, and a
gradient that flows through kept elements only."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pymk.gnn.dropout import dropout_mask, input_dropout


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([0.1, 0.3, 0.5, 0.9]), st.integers(0, 2**62))
def test_mask_values_and_rate(n, p, seed):
    m = dropout_mask((n,), p, seed)
    assert m.dtype == np.float32 and m.shape == (n,)
    assert (m >= 0).all() and np.allclose(m[m > 0], 1 / (1 - p), rtol=1e-4)  # dropped: 0, kept: 1 / (1 - p)
    kept = (m > 0).mean()
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n) + 1e-3  # binomial: 5 standard deviations


def test_mask_is_unbiased_and_seeded():
    m = dropout_mask((400, 500), 0.3, 11)
    assert abs(m.mean() - 1.0) < 0.01  # E[mask] = 1: activations keep their expectation
    assert np.array_equal(m, dropout_mask((400, 500), 0.3, 11))
    assert not np.array_equal(m, dropout_mask((400, 500), 0.3, 12))
    # neighbouring elements are not correlated (four uniforms come from each 64-bit draw)
    kept = (m.ravel() > 0).astype(float)
    assert abs(np.corrcoef(kept[:-1], kept[1:])[0, 1]) < 0.01


def test_input_dropout_training_eval_and_gradient():
    x = torch.randn(300, 16, requires_grad=True)
    assert input_dropout(x, 0.3, False) is x
    torch.manual_seed(0)
    a = input_dropout(x, 0.3, True)
    torch.manual_seed(0)
    b = input_dropout(x, 0.3, True)
    assert torch.equal(a, b)  # repeatable under torch.manual_seed
    a.sum().backward()
    kept = a.detach() != 0
    np.testing.assert_allclose(x.grad[kept].numpy(), 1 / 0.7, rtol=1e-5)
    assert (x.grad[~kept] == 0).all()
