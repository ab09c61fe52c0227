"""Opt-in tuning of the host process for speed: the one switch for process-wide settings.

widelimit never changes its host process unless asked: importing it and computing kernels,
predictions or empirical NTKs leave ``os.environ``, torch's thread count and default dtype,
the warning filters, glibc's malloc settings and the global RNG as they were
(``tests/test_side_effects.py``).  Two process-wide settings make kernels faster on CPUs,
and :func:`tune_runtime` (or ``WIDELIMIT_TUNE_RUNTIME=1`` in the environment before
``import widelimit``) turns them on:

* ``malloc``: glibc's mmap threshold 32 MiB and trim threshold 64 MiB
  (``mallopt``, :func:`widelimit.scale.memory.tune_malloc`), applied at the next kernel
  computation.  Kernel rules allocate and free the same (N1, N2, ...) intermediates over and
  over; with glibc's defaults each one is a fresh ``mmap`` paying a page fault per 4 KiB.
  It affects every allocation of the process and cannot be undone (glibc's dynamic
  thresholds are off once set), hence opt-in.  ``WIDELIMIT_TUNE_MALLOC=0``,
  ``GLIBC_TUNABLES`` or ``MALLOC_*_`` variables still veto it.
* ``openblas_thread_timeout``: sets ``OPENBLAS_THREAD_TIMEOUT`` (unless the user set it),
  so that SciPy's OpenBLAS threads (BLAS ``syrk`` / ``trmm`` in widelimit) sleep right after
  each call instead of spinning against torch's threads for ~2^28 cycles.  OpenBLAS reads
  it once, when SciPy's BLAS is first loaded; opting in after that has no effect (the
  returned :class:`RuntimeTuning` says so).  A setting read at library load cannot be
  scoped to widelimit's own calls.

Measured effect (docs/benchmarks.md#runtime-tuning): on the 2-core CI machine kernels of
a few milliseconds and predictions are up to ~1.5x faster with both on.

Scoped (always on, restored on exit): torch's thread count is set to 1 around small
problems (:func:`widelimit.scale.threads.single_thread`) and restored; ``module(seed=...)``
and :func:`widelimit.coord_check` / :func:`widelimit.coord_check_depth` restore the global RNG state.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

__all__ = ["RuntimeTuning", "tune_runtime", "runtime_tuning", "ENV_VAR"]

#: environment variable: ``1`` opts in at ``import widelimit`` (with the defaults of
#: :func:`tune_runtime`); unset or ``0`` leaves the process alone
ENV_VAR = "WIDELIMIT_TUNE_RUNTIME"


@dataclass(frozen=True)
class RuntimeTuning:
    """What :func:`tune_runtime` asked for and what took effect.

    Attributes:
        malloc: glibc malloc tuning requested (applied at the next kernel computation).
        openblas_thread_timeout: the requested ``OPENBLAS_THREAD_TIMEOUT``, or None.
        openblas_effective: whether OpenBLAS will see that value: False when SciPy's BLAS
            was already loaded, or the user had set the variable to something else.
    """

    malloc: bool = False
    openblas_thread_timeout: Optional[int] = None
    openblas_effective: bool = False


_state = {"tuning": RuntimeTuning()}


def _scipy_blas_loaded() -> bool:
    return "scipy.linalg._fblas" in sys.modules or "scipy.linalg" in sys.modules


def tune_runtime(malloc: bool = True, openblas_thread_timeout: Optional[int] = 4) -> RuntimeTuning:
    """Opt in to the process-wide settings that make widelimit faster (module docstring).

    Args:
        malloc: tune glibc malloc (mmap threshold 32 MiB, trim threshold 64 MiB) at the next
            kernel computation; False leaves malloc alone (an earlier tuning stays: it cannot
            be undone).
        openblas_thread_timeout: value for ``OPENBLAS_THREAD_TIMEOUT`` (OpenBLAS worker
            threads sleep after about ``2^(4 + value)`` cycles; 4 is its minimum), or None to
            leave the variable alone.  A value the user already set is kept.

    Returns:
        The :class:`RuntimeTuning` now in force.

    Example::

        import widelimit as wl
        wl.config.tune_runtime()          # before the first kernel (and before SciPy's linalg)
    """
    if not isinstance(malloc, bool):
        raise TypeError(f"`malloc` must be True or False, got {malloc!r}.")
    if openblas_thread_timeout is not None and (
            not isinstance(openblas_thread_timeout, int) or isinstance(openblas_thread_timeout, bool)
            or openblas_thread_timeout < 1):
        raise ValueError(f"`openblas_thread_timeout` must be a positive integer or None, "
                         f"got {openblas_thread_timeout!r}.")
    effective = False
    if openblas_thread_timeout is not None:
        value = os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(openblas_thread_timeout))
        effective = value == str(openblas_thread_timeout) and not _scipy_blas_loaded()
    _state["tuning"] = RuntimeTuning(malloc, openblas_thread_timeout, effective)
    return _state["tuning"]


def runtime_tuning() -> RuntimeTuning:
    """The :class:`RuntimeTuning` in force (all off unless :func:`tune_runtime` was called
    or ``WIDELIMIT_TUNE_RUNTIME=1`` was set at import)."""
    return _state["tuning"]


def _from_environment() -> None:
    """``WIDELIMIT_TUNE_RUNTIME=1`` at import: :func:`tune_runtime` with its defaults."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("1", "true", "on", "yes"):
        tune_runtime()
    elif value not in ("", "0", "false", "off", "no"):
        import warnings
        warnings.warn(f"{ENV_VAR} must be 1 (opt in) or 0 (leave the process alone), got "
                      f"{os.environ[ENV_VAR]!r}; leaving the process alone.", stacklevel=3)
