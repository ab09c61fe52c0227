"""The ODE solver for general losses against the MSE closed form; momentum; ODEState."""
import numpy as np
import torch

from widelimit import predict


def mse(f, y):
    return 0.5 * ((f - y) ** 2).mean()


def test_ode_mse_matches_closed_form(problem):
    kd, ktd, y = problem["kd"].ntk, problem["ktd"].ntk, problem["y"]
    f0 = 0.2 * torch.randn(y.shape, dtype=torch.float64)
    g0 = 0.2 * torch.randn(6, 2, dtype=torch.float64)
    t = [0.0, 1.0, 7.5, 40.0]
    closed = predict.gradient_descent_mse(kd, y, learning_rate=0.3)(t, f0, g0, ktd)
    ode = predict.gradient_descent(mse, kd, y, learning_rate=0.3)(t, f0, g0, ktd)
    for a, b in zip(ode, closed):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


def test_momentum_state_roundtrip_and_damping(problem):
    """Resuming from an ODEState equals integrating straight through; with momentum the
    MSE training loss still decays to ~0."""
    kd, y = problem["kd"].ntk.numpy(), problem["y"].numpy()
    fn = predict.momentum(mse, kd, y, learning_rate=0.5, momentum=0.9)
    s1 = fn(3.0, predict.ODEState(np.zeros_like(y)))
    s2 = fn(4.0, s1)
    direct = fn(7.0, predict.ODEState(np.zeros_like(y)))
    np.testing.assert_allclose(s2.fx_train, direct.fx_train, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(s2.qx_train, direct.qx_train, rtol=1e-6, atol=1e-8)
    late = fn(400.0, np.zeros_like(y))
    assert np.abs(late - y).max() < 1e-3 * np.abs(y).max()


def test_cross_entropy_decreases(problem):
    kd = problem["kd"].ntk
    labels = (problem["y"][:, 0] > 0).long()
    y = torch.nn.functional.one_hot(labels, 2).double()

    def ce(f, t):
        return -(torch.log_softmax(f, -1) * t).mean()
    out = predict.gradient_descent(ce, kd, y)([0.0, 10.0, 100.0], 0.0)
    losses = [ce(o, y).item() for o in out]
    assert losses[0] > losses[1] > losses[2]
    assert (out[-1].argmax(1) == labels).all()
