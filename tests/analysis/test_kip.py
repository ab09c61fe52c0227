"""KIP (Nguyen et al. 2021): objective decreases, distilled set beats random subsets held out."""
import numpy as np
import pytest
import torch

from widelimit import layers as L
from widelimit.analysis import class_targets, kip, krr_predict


def _digits(n_train=300):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = torch.tensor(x[perm] / 16.0), torch.tensor(y[perm])
    x = x - x[:n_train].mean(0)
    return x[:n_train], y[:n_train], x[n_train:n_train + 500], y[n_train:n_train + 500]


NET = L.serial(L.Dense(256, W_std=1.5, b_std=0.05), L.Relu(), L.Dense(1, W_std=1.5))


def _acc(xs, ys, xt, yt):
    with torch.no_grad():
        return float((krr_predict(NET.kernel_fn, xs, ys, xt, get="ntk").argmax(1) == yt).double().mean())


def test_kip_improves_objective_and_beats_random_subsets():
    x, y, xt, yt = _digits()
    res = kip(NET.kernel_fn, x, y, 1, steps=40, lr=0.02, get="ntk")
    assert res.x_support.shape == (10, 64) and not res.x_support.requires_grad
    assert (res.labels == torch.arange(10)).all()
    # full-batch targets: the objective decreases on average, window by window
    windows = res.losses.reshape(4, 10).mean(1)
    assert (np.diff(windows) < 0).all(), windows
    assert res.losses[-1] < 0.7 * res.losses[0]
    kip_acc = _acc(res.x_support, res.y_support, xt, yt)
    rand = []
    for s in range(5):
        g = torch.Generator().manual_seed(100 + s)
        idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:1]]
                         for c in range(10)])
        rand.append(_acc(x[idx], class_targets(y[idx], 10, x.dtype), xt, yt))
    assert kip_acc > max(rand) and kip_acc > np.mean(rand) + 0.1, (kip_acc, rand)


def test_kip_minibatch_and_labels_reproducible():
    x, y, _, _ = _digits(200)
    a = kip(NET.kernel_fn, x, y, 1, steps=5, lr=0.01, batch_size=50, learn_labels=True, get="ntk", seed=3)
    b = kip(NET.kernel_fn, x, y, 1, steps=5, lr=0.01, batch_size=50, learn_labels=True, get="ntk", seed=3)
    torch.testing.assert_close(a.x_support, b.x_support)
    assert not torch.equal(a.y_support, class_targets(a.labels, 10, torch.float64))  # labels moved
    onehot = torch.nn.functional.one_hot(y, 10).double()
    c = kip(NET.kernel_fn, x, onehot, 1, steps=5, lr=0.01, batch_size=50, learn_labels=True, get="ntk", seed=3)
    torch.testing.assert_close(a.x_support, c.x_support)


def test_kip_bad_input():
    x, y, _, _ = _digits(100)
    with pytest.raises(ValueError, match="fewer than"):
        kip(NET.kernel_fn, x, y, 50, get="ntk")
    with pytest.raises(ValueError, match="rows"):
        kip(NET.kernel_fn, x, y[:10], 1, get="ntk")
    with pytest.raises(ValueError, match="return"):
        kip(lambda a, b: a @ b.T[:, :1], x, y, 1)
    with pytest.raises(ValueError, match="steps"):
        kip(NET.kernel_fn, x, y, 1, steps=0, get="ntk")
    with pytest.raises(ValueError, match="lr"):
        kip(NET.kernel_fn, x, y, 1, lr=-1.0, get="ntk")
    with pytest.raises(ValueError, match="class labels"):
        kip(NET.kernel_fn, x, y.double(), 1, get="ntk")
