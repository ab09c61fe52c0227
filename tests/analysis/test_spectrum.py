"""wl.analysis.spectrum: dense vs Lanczos vs known spectra, errors, plots, empirical NTK."""
import numpy as np
import pytest
import torch

from widelimit.analysis import decay_exponent, ntk_spectrum, plot_spectrum, spectrum


def _known(n=300, alpha=1.5, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    e = np.arange(1, n + 1, dtype=float) ** -alpha
    return (q * e) @ q.T, e, q


def test_dense_recovers_known_spectrum_and_vectors():
    k, e, q = _known()
    s = spectrum(k)
    assert isinstance(s.eigenvalues, np.ndarray) and s.method == "dense" and s.n == 300
    np.testing.assert_allclose(s.eigenvalues, e, rtol=1e-8, atol=1e-12)
    # K u = e u, orthonormal columns
    np.testing.assert_allclose(k @ s.eigenvectors[:, :5], s.eigenvectors[:, :5] * e[:5], atol=1e-10)
    np.testing.assert_allclose(s.eigenvectors.T @ s.eigenvectors, np.eye(300), atol=1e-10)
    np.testing.assert_allclose(s.normalized(), e / 300, rtol=1e-8)


def test_lanczos_matches_dense_top_k():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((1200, 40)))
    e = np.arange(1, 41, dtype=float) ** -1.0 + 1e-3          # top 40 known, the rest 1e-3
    k = (q * (e - 1e-3)) @ q.T + 1e-3 * np.eye(1200)
    s = spectrum(torch.from_numpy(k), k=10)          # auto: k < N/10, N > 1000 -> Lanczos
    assert s.method == "lanczos" and isinstance(s.eigenvalues, torch.Tensor)
    torch.testing.assert_close(s.eigenvalues, torch.from_numpy(e[:10]), rtol=1e-8, atol=1e-12)
    kt = torch.from_numpy(k)
    torch.testing.assert_close(kt @ s.eigenvectors, s.eigenvectors * s.eigenvalues, atol=1e-9, rtol=0)
    d = spectrum(k, k=10, method="dense", eigenvectors=False)
    assert d.eigenvectors is None
    np.testing.assert_allclose(d.eigenvalues, e[:10], rtol=1e-8)


def test_decay_exponent():
    _, e, _ = _known(alpha=1.7)
    assert decay_exponent(e) == pytest.approx(1.7, abs=1e-10)
    assert decay_exponent(e * 3, start=5, stop=50) == pytest.approx(1.7, abs=1e-10)


@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, 2.0], [0.0, 1.0]]), "not symmetric"),
    (np.ones((3, 4)), "square"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN"),
    (np.ones(3), "2-D"),
])
def test_bad_kernels(bad, match):
    with pytest.raises(ValueError, match=match):
        spectrum(bad)


def test_bad_arguments():
    k = np.eye(4)
    with pytest.raises(ValueError, match="at most"):
        spectrum(k, k=5)
    with pytest.raises(ValueError, match="method"):
        spectrum(k, method="qr")
    with pytest.raises(ValueError, match="lanczos"):
        spectrum(k, method="lanczos")
    with pytest.raises(TypeError, match="integer"):
        spectrum(k, k=2.0)
    with pytest.raises(ValueError, match="non-negative"):
        decay_exponent([1.0, -1.0])


def test_plot_spectrum(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    _, e, _ = _known()
    ax = plot_spectrum([e, spectrum(np.diag(e[:50]))], labels=["a", "b"])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), e / e[0])
    ax.figure.savefig(tmp_path / "s.png")
    with pytest.raises(ValueError, match="labels"):
        plot_spectrum([e], labels=["a", "b"])


def test_ntk_spectrum_of_a_torch_model():
    model = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    s = ntk_spectrum(model, x)
    from widelimit import empirical_ntk
    ref = torch.linalg.eigvalsh(empirical_ntk(model, x)).flip(0)
    torch.testing.assert_close(s.eigenvalues, ref)
    assert (s.eigenvalues[:-1] >= s.eigenvalues[1:]).all()
