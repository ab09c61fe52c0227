"""gp_inference against a direct float64 solve; Student-t process against Monte Carlo."""
import numpy as np
import pytest
import torch
from scipy import stats

from widelimit import predict


def test_gp_inference_matches_direct_solve(problem):
    kd, ktd, ktt, y = problem["kd"], problem["ktd"], problem["ktt"], problem["y"].numpy()
    reg = 1e-3
    gp = predict.gp_inference(kd, y, diag_reg=reg)
    res = gp(("nngp", "ntk", "ntkgp"), ktd, ktt)
    K, T = kd.nngp.numpy(), kd.ntk.numpy()
    Kt, Tt = ktd.nngp.numpy(), ktd.ntk.numpy()
    Kr = K + reg * np.trace(K) / len(K) * np.eye(len(K))
    Tr = T + reg * np.trace(T) / len(T) * np.eye(len(T))
    ref = {
        "nngp": (Kt @ np.linalg.solve(Kr, y), ktt.nngp.numpy() - Kt @ np.linalg.solve(Kr, Kt.T)),
        "ntkgp": (Tt @ np.linalg.solve(Tr, y), ktt.ntk.numpy() - Tt @ np.linalg.solve(Tr, Tt.T)),
    }
    B = Tt @ np.linalg.inv(Tr)
    ref["ntk"] = (B @ y, ktt.nngp.numpy() + B @ K @ B.T - B @ Kt.T - Kt @ B.T)
    for g, (mean, cov) in ref.items():
        got = getattr(res, g)
        assert isinstance(got.mean, torch.Tensor)
        np.testing.assert_allclose(got.mean.numpy(), mean, rtol=1e-9, atol=1e-10, err_msg=g)
        np.testing.assert_allclose(got.covariance.numpy(), cov, rtol=1e-8, atol=1e-10, err_msg=g)
    # train set: N(y, 0); mean only without k_test_test; a single get gives one result
    tr = gp("nngp", None, True)
    assert torch.equal(tr.mean, torch.as_tensor(y)) and not tr.covariance.any()
    assert gp("ntk", ktd).shape == (6, 2)


def test_ntk_covariance_from_the_nngp_factor_equals_the_direct_form(problem):
    """With the NNGP in the same call the NTK covariance is the NNGP posterior plus a Gram
    matrix (gp._posterior_cov); alone it is T^T (K T - 2 K_dt) + K_tt.  Both exactly
    symmetric, equal to float64 rounding."""
    gp = predict.gp_inference(problem["kd"], problem["y"], diag_reg=1e-3)
    both = gp(("nngp", "ntk"), problem["ktd"], problem["ktt"]).ntk.covariance
    alone = gp("ntk", problem["ktd"], problem["ktt"]).covariance
    assert torch.equal(both, both.T) and torch.equal(alone, alone.T)
    torch.testing.assert_close(both, alone, rtol=1e-9, atol=1e-11)
    assert not torch.equal(both, alone)          # the two forms were both taken


def test_ensemble_at_infinity_is_gp_inference(problem):
    ens = predict.gradient_descent_mse_ensemble(problem["net"], problem["x"], problem["y"],
                                                diag_reg=1e-3)
    gp = predict.gp_inference(problem["kd"], problem["y"], diag_reg=1e-3)
    for g in ("nngp", "ntk"):
        a = ens(None, problem["xt"], g, compute_cov=True)
        b = gp(g, problem["ktd"], problem["ktt"])
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.covariance, b.covariance, rtol=1e-12, atol=1e-12)
        late = ens(1e9, problem["xt"], g, compute_cov=True)                # eigh path
        torch.testing.assert_close(late.mean, b.mean, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(late.covariance, b.covariance, rtol=1e-6, atol=1e-8)


def test_student_t_matches_monte_carlo_over_the_scale_prior(problem):
    """Importance-weighted Monte Carlo over s ~ InvGamma(alpha, beta) (400k draws): the
    predictive covariance (E[s | Y] * Sigma) agrees within 1%, densities within 2%."""
    kd, ktd, ktt = (problem[k].nngp.numpy() for k in ("kd", "ktd", "ktt"))
    y = problem["y"][:, :1].numpy()
    alpha, beta, noise = 3.0, 2.0, 1e-2
    st = predict.student_t_inference(kd, y, alpha, beta, diag_reg=noise, diag_reg_absolute_scale=True)
    loc, scale, df = st(ktd, ktt)
    assert df == 2 * alpha + y.size
    Kr = kd + noise * np.eye(len(kd))
    q = float((y * np.linalg.solve(Kr, y)).sum())
    mu = ktd @ np.linalg.solve(Kr, y)
    sigma = ktt - ktd @ np.linalg.solve(Kr, ktd.T)
    np.testing.assert_allclose(loc, mu, rtol=1e-9, atol=1e-12)

    rng = np.random.default_rng(0)
    s = stats.invgamma(alpha, scale=beta).rvs(400_000, random_state=rng)
    logw = -0.5 * y.size * np.log(s) - 0.5 * q / s          # log N(y; 0, s Kr) up to a constant
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mc_cov = (w * s).sum() * sigma
    np.testing.assert_allclose(scale * df / (df - 2), mc_cov, rtol=1e-2, atol=1e-6 * np.abs(mc_cov).max())

    idx = [0, 3]                                             # a 2-D marginal
    sub = np.ix_(idx, idx)
    t_dist = stats.multivariate_t(loc=loc[idx, 0], shape=scale[sub], df=df)
    for z in (np.zeros(2), np.array([0.5, -0.3]), np.array([1.5, 1.0])):
        point = loc[idx, 0] + z * np.sqrt(np.diag(scale[sub]))
        diff = point - mu[idx, 0]
        inv, (_, logdet) = np.linalg.inv(sigma[sub]), np.linalg.slogdet(sigma[sub])
        dens = np.exp(-0.5 * diff @ inv @ diff / s - np.log(2 * np.pi * s) - 0.5 * logdet)
        assert (w * dens).sum() == pytest.approx(t_dist.pdf(point), rel=2e-2)


def test_student_t_prior_only_is_a_t_distribution(problem):
    """With no data the marginal of a GP with InvGamma scale is t_{2a}(0, b/a K)."""
    kd = problem["kd"].nngp
    st = predict.student_t_inference(kd[:1, :1], torch.zeros(1, 1, dtype=torch.float64), 2.5, 1.5,
                                     diag_reg=1e9, diag_reg_absolute_scale=True)
    loc, scale, df = st(kd[1:3, :1], kd[1:3, 1:3])
    # an (almost) uninformative observation: df grows by one, scale -> (2b)/(2a+1) K
    torch.testing.assert_close(scale, (2 * 1.5) / (2 * 2.5 + 1) * kd[1:3, 1:3], rtol=1e-6, atol=0)
    assert df == 6.0 and loc.abs().max() < 1e-6
