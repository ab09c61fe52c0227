"""Large-N solvers against the direct solve (N = 3000, FC ReLU NTK, float64)."""
import numpy as np
import pytest
import torch

from widelimit import layers as L
from widelimit.solvers import (Falkon, KernelOperator, NystromPreconditioner, SolverMemoryError,
                               blocked_cholesky_solve, conjugate_gradient)

N = 3000


def _net():
    return L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5, b_std=0.05))


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 10, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :2]) + 0.1 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    k = _net().kernel_fn(x, None, get="ntk")
    ridge = 1e-2 * float(k.diagonal().mean())
    ref = torch.linalg.solve(k + ridge * torch.eye(N, dtype=k.dtype), y)
    return x, y, k, ridge, ref


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_cg_and_cholesky_match_direct_solve(problem):
    x, y, k, ridge, ref = problem
    op = KernelOperator(None, x, store=k, diag_reg=ridge, block_size=700)
    cg = conjugate_gradient(op, y, tol=1e-10)
    assert cg.converged and cg.residual <= 1e-10
    assert _rel(cg.x, ref) < 1e-7
    assert cg.iterations == len(cg.residuals) - 1 > 10
    assert cg.residuals[0] == 1.0 and cg.residuals[-1] < 1e-3 * cg.residuals[1]
    ch = blocked_cholesky_solve(op, y, block_size=700)      # 700 does not divide 3000
    assert ch.iterations == 0 and ch.residual < 1e-12
    assert _rel(ch.x, ref) < 1e-9
    assert _rel(blocked_cholesky_solve(k + ridge * torch.eye(N, dtype=k.dtype), y[:, 0]).x, ref[:, 0]) < 1e-9


def test_nystrom_preconditioning_cuts_iterations(problem):
    x, y, k, ridge, ref = problem
    op = KernelOperator(None, x, store=k, diag_reg=ridge, block_size=1000)
    plain = conjugate_gradient(op, y, tol=1e-8)
    pcg = conjugate_gradient(op, y, precond=NystromPreconditioner(op, 300), tol=1e-8)
    assert plain.converged and pcg.converged
    assert pcg.iterations < plain.iterations / 2, (pcg.iterations, plain.iterations)
    assert _rel(pcg.x, ref) < 1e-5


def test_falkon_all_centers_is_exact_krr(problem):
    x, y, k, ridge, ref = problem
    f = Falkon(None, N, ridge, store=k, tol=1e-10, block_size=1000).fit(x, y)
    assert f.solve_info_.iterations <= 3        # the preconditioner is exact when M = N
    pred = f.predict(None, k_test_centers=k[:200])
    assert _rel(pred, k[:200] @ ref) < 1e-7


def test_falkon_matches_nystrom_closed_form(problem):
    x, y, k, ridge, _ = problem
    f = Falkon(_net(), 400, ridge, tol=1e-10, block_size=1000, seed=3).fit(x, y)
    res = f.solve_info_
    assert res.converged and res.iterations < 100
    # CG residuals need not fall at every step (the error's energy norm does); they fall overall
    half = len(res.residuals) // 2
    assert max(res.residuals[half:]) < 1e-2 * min(res.residuals[:3]) and res.residuals[-1] <= 1e-10
    idx = torch.as_tensor(f.center_indices_)
    knm, kmm = k[:, idx], k[idx][:, idx]
    alpha = torch.linalg.solve(knm.T @ knm + ridge * kmm, knm.T @ y)
    assert _rel(knm @ f.alpha_, knm @ alpha) < 1e-6
    assert _rel(f.predict(x[:50]), k[:50, idx] @ alpha) < 1e-6
    # the same fit read from a stored kernel (numpy memmap-like ndarray)
    f2 = Falkon(None, 400, ridge, store=k.numpy(), tol=1e-10, block_size=1000, seed=3).fit(x, y)
    assert _rel(f2.alpha_, f.alpha_) < 1e-6


class _Recorder:
    def __init__(self, net):
        self.fn, self.shapes = net.kernel_fn, []

    def __call__(self, x1, x2=None, get="ntk"):
        self.shapes.append((x1.shape[0], (x1 if x2 is None else x2).shape[0]))
        return self.fn(x1, x2, get=get)


def test_operator_never_materialises_n_by_n():
    g = torch.Generator().manual_seed(1)
    n = 250
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    rec = _Recorder(_net())
    op = KernelOperator(rec, x, diag_reg=0.1, block_size=64)
    out = op.matvec(v)
    full = _net().kernel_fn(x, None, get="ntk")
    assert _rel(out, full @ v + 0.1 * v) < 1e-12
    assert max(a * b for a, b in rec.shapes) <= 64 * 64
    assert len(rec.shapes) == 10        # 4 row blocks: upper triangle only (4 * 5 / 2)
    rec.shapes.clear()
    f = Falkon(rec, 40, 0.1, tol=1e-8, block_size=64, max_memory=1000).fit(x, v)   # no cache
    assert f.solve_info_.converged
    assert max(a * b for a, b in rec.shapes) <= 64 * 40
    assert max(rec.shapes)[0] <= 64


def test_bad_input_errors(problem):
    x, y, k, ridge, _ = problem
    small = k[:100, :100]
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(-small, torch.ones(100, dtype=k.dtype))
    with pytest.raises(ValueError, match="not positive definite"):
        blocked_cholesky_solve(-small, torch.ones(100, dtype=k.dtype), block_size=30)
    with pytest.raises(ValueError, match="NaN"):
        conjugate_gradient(small, torch.full((100,), float("nan"), dtype=k.dtype))
    bad = small.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        conjugate_gradient(bad, torch.ones(100, dtype=k.dtype))
    with pytest.raises(ValueError, match="NaN"):
        blocked_cholesky_solve(bad, torch.ones(100, dtype=k.dtype))
    with pytest.raises(ValueError, match=r"`b`"):
        conjugate_gradient(KernelOperator(None, x[:100], store=small), torch.ones(99, dtype=k.dtype))
    with pytest.raises(ValueError, match="`store` must have shape"):
        KernelOperator(None, x[:99], store=small)
    with pytest.raises(ValueError, match="`block_size`"):
        KernelOperator(None, x[:100], store=small, block_size=0)
    with pytest.raises(ValueError, match="`n_centers`"):
        Falkon(None, 101, 1.0, store=small).fit(x[:100], y[:100])
    with pytest.raises(ValueError, match="`ridge`"):
        Falkon(None, 10, 0.0, store=small)
    with pytest.raises(SolverMemoryError, match="falkon"):
        blocked_cholesky_solve(KernelOperator(None, x[:100], store=small), torch.ones(100, dtype=k.dtype),
                               max_memory=1000)
    with pytest.raises(TypeError, match="kernel_fn"):
        KernelOperator(3, x)


def test_stored_kernel_in_zarr(problem, tmp_path):
    zarr = pytest.importorskip("zarr")      # installed in CI: this runs there
    x, y, k, ridge, ref = problem
    n = 1200
    arr = zarr.create_array(str(tmp_path / "K.zarr"), shape=(n, n), chunks=(500, 500), dtype="f8")
    arr[:, :] = k[:n, :n].numpy()
    sub = k[:n, :n] + ridge * torch.eye(n, dtype=k.dtype)
    direct = torch.linalg.solve(sub, y[:n])
    op = KernelOperator(None, x[:n], store=arr, diag_reg=ridge, block_size=500)
    res = conjugate_gradient(op, y[:n], precond=NystromPreconditioner(op, 200), tol=1e-10)
    assert _rel(res.x, direct) < 1e-7
    f = Falkon(None, n, ridge, store=arr, tol=1e-10, block_size=500).fit(x[:n], y[:n])
    assert _rel(f.predict(None, k_test_centers=k[:100, :n]), k[:100, :n] @ direct) < 1e-7
