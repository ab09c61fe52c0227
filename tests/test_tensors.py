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


def test_openblas_threads_sleep_after_calls_unless_the_user_chose():
    """Opted in (WIDELIMIT_TUNE_RUNTIME=1), `import widelimit` sets OPENBLAS_THREAD_TIMEOUT
    (SciPy's BLAS threads would spin against torch's) only when the user has not set it;
    without opting in it leaves the variable alone."""
    import os
    import subprocess
    import sys
    code = "import os, widelimit; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "WIDELIMIT_TUNE_RUNTIME")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = (lambda e: subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                                    text=True, check=True).stdout.strip())
    assert run(env) == "None"
    assert run({**env, "WIDELIMIT_TUNE_RUNTIME": "0"}) == "None"
    env["WIDELIMIT_TUNE_RUNTIME"] = "1"
    assert run(env) == "4"
    assert run({**env, "OPENBLAS_THREAD_TIMEOUT": "12"}) == "12"
