"""Write neural-tangents 0.6.5 predict-module reference values to tests/data/nt_predict_reference.npz.

Run inside the peer environment (JAX with x64):
    /work/venv-peers/bin/python benchmarks/peers/make_predict_reference.py
A seeded problem (FC ReLU network, 24 train / 7 test points, 3 outputs) gives float64 NNGP
and NTK kernels; the script stores them together with NT's outputs of gradient_descent_mse,
gradient_descent_mse_ensemble, gp_inference (nngp/ntk/ntkgp), gradient_descent
(cross-entropy, with and without momentum) and max_learning_rate.  The tests feed the same
kernels to widelimit.predict and compare (1e-6 relative); neural-tangents is not needed there.
"""
import os

import numpy as np

os.environ.setdefault("JAX_ENABLE_X64", "1")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

rng = np.random.default_rng(1234)
N, M, D, K = 24, 7, 6, 3
x_train = rng.standard_normal((N, D))
x_test = rng.standard_normal((M, D))
y_train = rng.standard_normal((N, K))
labels = rng.integers(0, K, N)
y_onehot = np.eye(K)[labels]
fx_train_0 = 0.3 * rng.standard_normal((N, K))
fx_test_0 = 0.3 * rng.standard_normal((M, K))
times = np.array([0.0, 0.5, 5.0, 50.0, 500.0])

_, _, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                              stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                              stax.Dense(1, W_std=1.5, b_std=0.05))
k_dd = kernel_fn(x_train, None, ("nngp", "ntk"))
k_td = kernel_fn(x_test, x_train, ("nngp", "ntk"))
k_tt = kernel_fn(x_test, None, ("nngp", "ntk"))
out = dict(x_train=x_train, x_test=x_test, y_train=y_train, y_onehot=y_onehot,
           fx_train_0=fx_train_0, fx_test_0=fx_test_0, times=times)
for name, k in (("dd", k_dd), ("td", k_td), ("tt", k_tt)):
    out[f"k_{name}/nngp"] = np.asarray(k.nngp)
    out[f"k_{name}/ntk"] = np.asarray(k.ntk)

# gradient_descent_mse on the NTK, given initial outputs
for tag, reg, absolute in (("rel", 1e-3, False), ("abs", 1e-2, True), ("noreg", 0.0, False)):
    fn = predict.gradient_descent_mse(k_dd.ntk, y_train, learning_rate=0.7, diag_reg=reg,
                                      diag_reg_absolute_scale=absolute)
    for ttag, t in (("inf", None), ("t", times)):
        tr, te = fn(t, fx_train_0, fx_test_0, k_td.ntk)
        out[f"mse/{tag}/{ttag}/train"] = np.asarray(tr)
        out[f"mse/{tag}/{ttag}/test"] = np.asarray(te)

# gradient_descent_mse_ensemble (mean and covariance, test and train sets)
ens = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=0.7,
                                            diag_reg=1e-4)
for g in ("nngp", "ntk"):
    for ttag, t in (("inf", None), ("t", times)):
        for stag, xs in (("test", x_test), ("train", None)):
            mean, cov = ens(t, xs, g, compute_cov=True)
            out[f"ens/{g}/{ttag}/{stag}/mean"] = np.asarray(mean)
            out[f"ens/{g}/{ttag}/{stag}/cov"] = np.asarray(cov)

# gp_inference on Kernel objects
gp = predict.gp_inference(k_dd, y_train, diag_reg=1e-4)
res = gp(("nngp", "ntk", "ntkgp"), k_td, k_tt)
for g in ("nngp", "ntk", "ntkgp"):
    out[f"gp/{g}/mean"] = np.asarray(getattr(res, g).mean)
    out[f"gp/{g}/cov"] = np.asarray(getattr(res, g).covariance)


# gradient_descent for cross-entropy, plain and with momentum
def cross_entropy(fx, y):
    return -jnp.mean(jax.nn.log_softmax(fx) * y)


ode_times = np.array([0.5, 2.0, 10.0])
for tag, mom in (("gd", None), ("momentum", 0.9)):
    fn = predict.gradient_descent(cross_entropy, k_dd.ntk, y_onehot, learning_rate=2.0,
                                  momentum=mom)
    tr, te = fn(ode_times, fx_train_0, fx_test_0, k_td.ntk)
    out[f"ode/{tag}/train"] = np.asarray(tr)
    out[f"ode/{tag}/test"] = np.asarray(te)
out["ode/times"] = ode_times

out["max_lr/plain"] = np.asarray(predict.max_learning_rate(k_dd.ntk))
out["max_lr/momentum"] = np.asarray(predict.max_learning_rate(k_dd.ntk, y_train_size=N * K,
                                                              momentum=0.5))

path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "nt_predict_reference.npz")
np.savez_compressed(path, **out)
print("wrote", os.path.normpath(path), len(out), "arrays")
