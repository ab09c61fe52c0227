"""Shared tensor helpers."""
import pytest
import torch

from widelimit._tensors import gram


@pytest.mark.parametrize("n,d", [(130, 70), (1100, 64), (50, 200)])
def test_symmetric_gram_matches_gemm_and_is_symmetric(n, d):
    a = torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    got = gram(a, a, symmetric=True)
    torch.testing.assert_close(got, a @ a.T, rtol=1e-13, atol=1e-12)
    if n >= 128 and d >= 64:        # the blocked path mirrors: exactly symmetric
        assert torch.equal(got, got.T)
    b = torch.randn(n - 7, d, dtype=torch.float64)
    torch.testing.assert_close(gram(a, b), a @ b.T, rtol=0, atol=0)
