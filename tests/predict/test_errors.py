"""Singular kernels never give silent NaN; bad arguments raise errors naming the argument."""
import re

import numpy as np
import pytest
import torch

from widelimit import predict
from widelimit.predict import SingularKernelWarning


@pytest.fixture
def dup(problem):
    """Training set with points 0..4 duplicated at the end (exactly singular kernels)."""
    x = torch.cat([problem["x"], problem["x"][:5]])
    return x, torch.cat([problem["y"], problem["y"][:5]])


def test_duplicated_points_no_reg_warn_and_equal_deduplicated(problem, dup):
    """diag_reg=0 on duplicated points: SingularKernelWarning, finite, and the null space is
    projected out, so converged (t = inf) predictions equal those of the deduplicated
    training set (1e-6); at finite t duplicates weigh double in the loss, so only finiteness."""
    net, xt = problem["net"], problem["xt"]
    x, y = dup
    clean = predict.gradient_descent_mse_ensemble(net, problem["x"], problem["y"])
    for t in (None, np.inf, [1.0, 100.0]):
        for get in ("nngp", "ntk"):
            ens = predict.gradient_descent_mse_ensemble(net, x, y)
            with pytest.warns(SingularKernelWarning, match="diag_reg"):
                got = ens(t, xt, get, compute_cov=True)
            ref = clean(t, xt, get, compute_cov=True)
            for a, b in zip(got, ref):
                assert torch.isfinite(a).all()
                if isinstance(t, list):
                    continue
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


def test_conflicting_duplicates_converge_to_the_average(problem):
    """Same input twice with targets y1, y2: gradient flow converges to fitting (y1 + y2) / 2."""
    kd = problem["net"].kernel_fn(torch.cat([problem["x"], problem["x"][:1]]), None, get="ntk")
    ktd = problem["net"].kernel_fn(problem["xt"], torch.cat([problem["x"], problem["x"][:1]]), get="ntk")
    y = torch.cat([problem["y"], problem["y"][:1] + 1.0])
    fn = predict.gradient_descent_mse(kd, y)
    with pytest.warns(SingularKernelWarning):
        got = fn(None, None, 0.0, ktd)
    y_avg = problem["y"].clone()
    y_avg[0] += 0.5
    ref = predict.gradient_descent_mse(kd[:-1, :-1], y_avg)(None, None, 0.0, ktd[:, :-1])
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_gp_and_student_t_on_singular_kernels(problem, dup):
    kd = problem["net"].kernel_fn(dup[0], None, get=("nngp", "ntk"))
    ktd = problem["net"].kernel_fn(problem["xt"], dup[0], get=("nngp", "ntk"))
    with pytest.warns(SingularKernelWarning):
        out = predict.gp_inference(kd, dup[1])(("nngp", "ntk"), ktd, problem["ktt"])
    assert all(torch.isfinite(v).all() for g in out for v in g)
    with pytest.warns(SingularKernelWarning):
        st = predict.student_t_inference(kd, dup[1])(ktd, problem["ktt"])
    assert torch.isfinite(st.location).all() and torch.isfinite(st.scale).all()


def test_regularised_duplicates_do_not_warn(problem, dup, recwarn):
    ens = predict.gradient_descent_mse_ensemble(problem["net"], *dup, diag_reg=1e-4)
    ens(None, problem["xt"], "ntk", compute_cov=True)
    ens([1.0, np.inf], problem["xt"], "ntk", compute_cov=True)
    assert not [w for w in recwarn if issubclass(w.category, SingularKernelWarning)]


def _raises(arg, fn, *a, **kw):
    with pytest.raises(ValueError, match=re.escape(f"`{arg}`")):
        fn(*a, **kw)


def test_argument_errors_name_the_argument(problem):
    kd, ktd, y = problem["kd"].ntk, problem["ktd"].ntk, problem["y"]
    g0 = torch.zeros(6, 2, dtype=torch.float64)
    _raises("k_train_train", predict.gradient_descent_mse, kd[:, :5], y)
    _raises("k_train_train", predict.gradient_descent_mse, kd[0], y)
    _raises("y_train", predict.gradient_descent_mse, kd, y[:5])
    y_nan = y.clone()
    y_nan[3, 1] = float("nan")
    _raises("y_train", predict.gradient_descent_mse, kd, y_nan)
    _raises("y_train", predict.gp_inference, kd, y_nan)
    _raises("y_train", predict.gradient_descent_mse_ensemble, problem["net"], problem["x"], y_nan)
    _raises("learning_rate", predict.gradient_descent_mse, kd, y, learning_rate=-1.0)
    _raises("learning_rate", predict.gradient_descent_mse_ensemble, problem["net"], problem["x"], y,
            learning_rate=-0.1)
    _raises("diag_reg", predict.gradient_descent_mse, kd, y, diag_reg=-1e-3)
    fn = predict.gradient_descent_mse(kd, y)
    _raises("t", fn, -1.0, 0.0, g0, ktd)
    _raises("t", fn, [1.0, -2.0], 0.0, g0, ktd)
    _raises("t", fn, float("nan"), 0.0, g0, ktd)
    _raises("k_test_train", fn, 1.0, 0.0, g0, ktd[:, :7])
    _raises("k_test_train", fn, 1.0, 0.0, g0, None)
    _raises("fx_test_0", fn, 1.0, 0.0, torch.zeros(5, 2, dtype=torch.float64), ktd)
    _raises("fx_train_0", fn, 1.0, torch.zeros(3, 2, dtype=torch.float64), None)
    gp = predict.gp_inference(problem["kd"], y)
    _raises("k_test_train", gp, "nngp", problem["ktd"].nngp[:, 1:])
    _raises("k_test_test", gp, "nngp", problem["ktd"], problem["ktt"].nngp[1:, 1:])
    _raises("get", gp, "mean")
    ens = predict.gradient_descent_mse_ensemble(problem["net"], problem["x"], y)
    _raises("t", ens, -0.5, problem["xt"], "ntk")
    _raises("x_test", ens, 1.0, problem["xt"][:, :3], "ntk")
    _raises("get", ens, 1.0, problem["xt"], "ntkgp")
    _raises("alpha", predict.student_t_inference, kd, y, alpha=0.0)
    ode = predict.gradient_descent(lambda f, t: ((f - t) ** 2).mean(), kd, y)
    _raises("t", ode, -1.0, 0.0)
    _raises("t", ode, None, 0.0)
    _raises("learning_rate", predict.gradient_descent, lambda f, t: f.sum(), kd, y, learning_rate=0.0)
    _raises("momentum", predict.gradient_descent, lambda f, t: f.sum(), kd, y, momentum=1.5)
    with pytest.raises(TypeError, match="y_train"):
        predict.gradient_descent_mse(kd, np.arange(20))
