"""The layer abstraction: one object carries the kernel rule and the finite module.

Every layer implements

* ``apply_kernel(k)`` -- the infinite-width rule mapping a :class:`Kernel` (or a
  list of them, for branching layers) to the next;
* ``build()`` -- a fresh, randomly initialised ``torch.nn.Module`` of the finite
  network with the same hyperparameters (lazy in its input size).

``kernel_fn`` and ``module`` are shared here, so a new layer writes only its rule
and its module (the neural-tangents ``(init_fn, apply_fn, kernel_fn)`` triple).
"""
from __future__ import annotations

import copy
import functools
import inspect
from typing import Any, Callable, ClassVar, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from widelimit._validate import check_bool, check_get
from widelimit._tensors import as_input, check_finite_input, kernels_tuple
from widelimit.kernels.state import Kernel
from widelimit.layers import spec as _spec

KERNEL_NAMES = ("nngp", "ntk")
Get = Union[None, str, Sequence[str]]


def canonical_get(get: Get) -> Optional[tuple[str, ...]]:
    return check_get(get, KERNEL_NAMES)


def select(k: Kernel, get: Get):
    """Pick ``get`` out of a Kernel: one tensor for a string, a namedtuple for a tuple."""
    names = canonical_get(get)
    if names is None:
        return k

    def one(name: str) -> Tensor:
        value = getattr(k, name)
        if value is None:
            raise ValueError(f"The kernel '{name}' was not computed.")
        return value.expand_as(k.nngp) if value.ndim == 0 else value

    if isinstance(get, str):
        return one(get)
    return kernels_tuple(tuple(names))(*(one(n) for n in names))


def prepare_inputs(x1: Any, x2: Any) -> tuple[Tensor, Optional[Tensor], bool]:
    """Validate ``x1``, ``x2``; promote to a common float dtype; return (x1, x2, was_numpy)."""
    t1, t2, _, _, was_numpy = prepare_masked_inputs(x1, x2)
    return t1, t2, was_numpy


def _split_mask(mask: Any, two: bool) -> tuple[Any, Any]:
    if mask is None:
        return None, None
    if not two:
        if isinstance(mask, tuple):
            raise ValueError("`mask` must be one boolean mask for `x1` when `x2` is None, got a tuple.")
        return mask, None
    if not isinstance(mask, tuple) or len(mask) != 2:
        raise ValueError("With `x2` given, `mask` must be a pair `(mask1, mask2)` (either may be "
                         f"None), got {type(mask).__name__}.")
    return mask


def to_channels_first(x: Tensor, channel_axis: int) -> Tensor:
    """``x`` with its ``channel_axis`` moved to axis 1 (PyTorch layout), other axes in order."""
    if x.ndim <= 2:
        return x
    from widelimit.layers.dense import resolve_channel_axis
    axis = resolve_channel_axis(channel_axis, x.ndim)
    return x if axis == 1 else x.movedim(axis, 1)


def _mask_to_channels_first(mask: Any, ndim: int, channel_axis: int) -> Any:
    """An entry mask of the inputs' own shape follows them to PyTorch layout; a position
    mask (N, *S) keeps its (unchanged) order of positions."""
    if mask is None or not hasattr(mask, "ndim") or mask.ndim != ndim:
        return mask
    m = torch.as_tensor(mask)
    return to_channels_first(m, channel_axis)


def prepare_masked_inputs(x1: Any, x2: Any, mask: Any = None, mask_constant: Optional[float] = None,
                          channel_axis: int = 1
                          ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor], bool]:
    """As :func:`prepare_inputs`, and apply ``mask`` / ``mask_constant``
    (:mod:`widelimit.kernels.masking`): returns (x1, x2, mask1, mask2, was_numpy) with
    masked entries zeroed and position masks (None where nothing is masked).  Inputs with
    their channels at another ``channel_axis`` (the first layer's, e.g. ``Dense(...,
    channel_axis=-1)`` on (N, L, d) tokens) are moved to PyTorch layout (N, C, *S) first."""
    from widelimit.kernels.masking import apply_mask, entry_mask
    masking = mask is not None or mask_constant is not None
    t1, was_numpy = as_input(x1, "x1", check_finite=not masking)
    mask1, mask2 = _split_mask(mask, x2 is not None)
    if channel_axis != 1 and t1.ndim > 2:
        ndim = t1.ndim
        t1 = to_channels_first(t1, channel_axis)
        mask1 = _mask_to_channels_first(mask1, ndim, channel_axis)
        mask2 = _mask_to_channels_first(mask2, ndim, channel_axis)
    t1, m1 = apply_mask(t1, entry_mask(t1, mask1, mask_constant, "x1"))
    t2 = m2 = None
    if x2 is not None:
        t2, _ = as_input(x2, "x2", check_finite=not masking)
        if channel_axis != 1 and t2.ndim > 2:
            t2 = to_channels_first(t2, channel_axis)
        t2, m2 = apply_mask(t2, entry_mask(t2, mask2, mask_constant, "x2"))
        if t1.shape[1:] != t2.shape[1:]:
            raise ValueError(f"`x1` and `x2` must agree in every dimension but the batch one: "
                             f"x1 has shape {tuple(t1.shape)}, x2 has shape {tuple(t2.shape)}.")
        if t1.device != t2.device:
            raise ValueError(f"`x1` is on {t1.device} and `x2` on {t2.device}; put them on one device.")
        dtype = torch.promote_types(t1.dtype, t2.dtype)
        t1, t2 = t1.to(dtype), t2.to(dtype)
    if masking:
        check_finite_input(t1, "x1")
        if t2 is not None:
            check_finite_input(t2, "x2")
    return t1, t2, m1, m2, was_numpy


def _recording(init):
    """Wrap a layer's ``__init__`` so that the outermost call records its arguments
    (``Layer.to_dict`` serialises them; :mod:`widelimit.layers.spec`)."""
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_spec_call" not in self.__dict__:       # not a super().__init__ from a subclass
            self.__dict__["_spec_call"] = (args, kwargs)
        init(self, *args, **kwargs)
    __init__._records_spec = True   # type: ignore[attr-defined]
    return __init__


class Layer:
    """Base class of all layers: subclasses implement ``apply_kernel`` and ``build``.

    Every subclass records the arguments of its constructor call, so any architecture
    serialises (:meth:`to_dict`, :meth:`to_json`; :mod:`widelimit.layers.spec`).
    """

    _spec_name = "Layer"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_spec", False):
            cls.__init__ = _recording(init)  # type: ignore[method-assign]
        _spec.register_layer(cls)

    #: True when the rule needs full spatial covariances (pooling, flatten, attention)
    needs_full_spatial: bool = False

    #: hyperparameter specs, attribute name -> check (``widelimit._validate.Real`` / ``Int``,
    #: or any ``check(name, value, owner) -> value``): every assignment of these attributes,
    #: in ``__init__`` and in :meth:`copy`, is checked (type, finiteness, range) and
    #: normalised here, so a layer states its rules once and never repeats them
    hyperparameters: ClassVar[Mapping[str, Callable[..., Any]]] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        check = type(self).hyperparameters.get(name)
        if check is not None:
            value = check(name, value, type(self).__name__)
        object.__setattr__(self, name, value)

    # -- to implement -------------------------------------------------------------------
    def apply_kernel(self, k):  # pragma: no cover - abstract
        raise NotImplementedError

    def build(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> Sequence["Layer"]:
        """Sub-layers (combinators override this)."""
        return ()

    # -- shared -----------------------------------------------------------------------
    def walk(self) -> Iterator["Layer"]:
        """All layers in forward order, depth first."""
        yield self
        for c in self.children():
            yield from c.walk()

    #: whether ``apply_kernel`` clears ``Kernel.scratch`` before handing the state to any
    #: rule that might share its buffers (``Serial`` does)
    clears_scratch = False

    #: whether ``apply_kernel`` reads the raw inputs' ``nngp`` when it is the first layer
    #: (attention with linear scaling needs only ``Kernel.input_factors``)
    reads_input_nngp = True

    def _factors_only(self) -> bool:
        """Whether the first layer to see the input kernel (after ``Serial`` wrappers) needs
        only its factors, so that the (N1, N2, P, P) input covariance need not be formed."""
        from widelimit.layers.combinators import Serial
        for layer in self.walk():
            if not isinstance(layer, Serial):
                return not layer.reads_input_nngp
        return False

    def has_native_rule(self) -> bool:
        """Whether this layer's kernel rule is at most a few passes over the kernel or a
        native loop (:mod:`widelimit.kernels._native`), so that a vector kernel needs no
        cache-sized tiles; nonlinearities without a native loop say False."""
        return True

    def input_channel_axis(self) -> int:
        """The channel axis of the inputs this architecture reads: 1 (PyTorch layout) unless
        its first layer says otherwise (``Dense(..., channel_axis=-1)`` on channels-last
        tokens); ``kernel_fn`` moves it to 1 before computing the input kernel."""
        return 1

    def requires_full_spatial(self) -> bool:
        return any(layer.needs_full_spatial for layer in self.walk())

    def kernel_fn(self, x1: Any, x2: Any = None, get: Get = None, *,
                  diagonal_spatial: Optional[bool] = None, max_memory=None,
                  mask_constant: Optional[float] = None, mask: Any = None,
                  spatial_blocking: Union[None, bool, int] = None,
                  block_size: Optional[int] = None, progress: bool = False):
        """Infinite-width kernels of this architecture between ``x1`` and ``x2``.

        Args:
            x1: inputs (N1, d) or images (N1, C, *spatial), float tensor or ndarray.
            x2: inputs (N2, ...) or None for ``x1`` against itself.
            get: ``"nngp"``, ``"ntk"``, a tuple of them, or None for the :class:`Kernel`.
            diagonal_spatial: force the cheap diagonal-spatial mode (True) or the full
                spatial covariance (False); None chooses automatically.
            max_memory: peak memory budget for the kernel computation, bytes or a string
                such as ``"4GB"``; None uses half the memory available now.  Image
                kernels are computed in blocks of (x1, x2) pairs that fit it
                (:mod:`widelimit.scale.blocking`).  When even one pair of full spatial
                covariances does not fit, serial conv / pooling / nonlinearity chains
                ending in global pooling or Flatten are computed in bands of positions
                (:mod:`widelimit.scale.spatial`); ValueError if that does not fit either
                or the architecture is not such a chain (or the inputs are masked).
            mask_constant: entries of the inputs equal to it (NaN: NaN entries) are
                masked, e.g. the padding of variable-length sequences
                (neural-tangents' ``mask_constant``; :mod:`widelimit.kernels.masking`).
            mask: alternatively boolean masks (True = masked): one for ``x1`` when ``x2``
                is None, else a pair ``(mask1, mask2)``; each of the input's shape, or
                (N, *S) per position.  Kernel entries of masked outputs are zero.
            spatial_blocking: None chooses automatically (above); True forces bands of
                positions, an integer forces bands of that many output rows of the
                first spatial axis; False never uses them.
            block_size: compute the result in blocks of at most this many inputs per side
                (:func:`widelimit.batch`); bit-identical to the unblocked call.
            progress: a tqdm progress bar over those blocks (entries/s).

        How the computation runs (tiles, blocks, bands, threads) is decided by
        :func:`widelimit.scale.execute.run`; a result that cannot fit ``max_memory`` (or the
        memory available now) raises :class:`widelimit.scale.memory.KernelMemoryError`
        before anything is allocated.

        Returns:
            (N1, N2) tensors (NumPy arrays for NumPy input), a namedtuple for a tuple
            ``get``, or the final :class:`Kernel` state when ``get`` is None.
        """
        if diagonal_spatial is not None:
            check_bool("diagonal_spatial", diagonal_spatial)
        from widelimit.scale.execute import run
        return run(self.apply_kernel, x1, x2, get=get, arch=self, max_memory=max_memory,
                   block_size=block_size, progress=progress, diagonal_spatial=diagonal_spatial,
                   mask_constant=mask_constant, mask=mask, spatial_blocking=spatial_blocking)

    def module(self, input_shape: Optional[Sequence[int]] = None, *,
               dtype: Optional[torch.dtype] = None, device: Any = None,
               seed: Optional[int] = None) -> nn.Module:
        """A freshly initialised finite ``torch.nn.Module`` of this architecture.

        With ``input_shape`` (without the batch axis) the lazy parameters are
        materialised by a dry run, so the module can be handed to an optimiser at once.
        """
        from widelimit.layers._module_checks import check_input_shape, install_input_check
        input_shape = check_input_shape(input_shape)
        gen_state = None
        if seed is not None:
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        try:
            m = self.build()
            if dtype is not None or device is not None:
                m = m.to(dtype=dtype, device=device)
            if input_shape is not None:
                x = torch.zeros((1, *input_shape), dtype=dtype or torch.get_default_dtype(),
                                device=device)
                with torch.no_grad():
                    m(x)
        finally:
            if gen_state is not None:
                torch.random.set_rng_state(gen_state)
        return install_input_check(m, input_shape)

    def copy(self, **changes) -> "Layer":
        """A shallow copy with attributes replaced; changes of constructor arguments (e.g.
        ``W_std``, ``out_dim``) are also made in the recorded spec, any other change makes
        the copy unserialisable (:meth:`to_dict` raises :class:`SpecError`)."""
        new = copy.copy(self)
        for k, v in changes.items():
            setattr(new, k, v)
        call = self.__dict__.get("_spec_call")
        if changes and call is not None:
            params = inspect.signature(type(self).__init__).parameters
            named = {n for n, p in params.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
            if set(changes) <= named:
                bound = inspect.signature(type(self).__init__).bind(self, *call[0], **call[1])
                bound.arguments.update(changes)
                call = (bound.args[1:], bound.kwargs)
            else:
                call = None
            new.__dict__["_spec_call"] = call
        return new

    def spec_arguments(self, field: str = "architecture") -> tuple[tuple, dict]:
        """The ``(args, kwargs)`` this layer was constructed with."""
        if "_spec_call" not in self.__dict__:
            return (), {}
        call = self.__dict__["_spec_call"]
        if call is None:
            raise _spec.SpecError(f"{field}: this {type(self).__name__} was changed by "
                                  f"copy() in an attribute that is not a constructor argument, "
                                  f"so it has no spec; build it with its constructor instead.")
        return tuple(call[0]), dict(call[1])

    def to_dict(self) -> dict:
        """This architecture as a JSON-ready dict: the tree of its constructor calls,
        with a format version (:mod:`widelimit.layers.spec`); inverse:
        :func:`widelimit.layers.from_dict`.  :class:`SpecError` for values that cannot be
        serialised (e.g. an unregistered function: :func:`widelimit.layers.register_function`)."""
        return _spec.to_dict(self)

    def to_json(self, **json_kw) -> str:
        """:meth:`to_dict` as a JSON string (``json_kw``, e.g. ``indent=2``, go to
        :func:`json.dumps`); inverse: :func:`widelimit.layers.from_json`."""
        return _spec.to_json(self, **json_kw)

    def map(self, fn) -> "Layer":
        """A copy of the architecture with ``fn`` applied to every leaf layer."""
        return fn(self)

    def with_width(self, width: int) -> "Layer":
        """The same architecture with every hidden width (all trainable layers but the
        last one in forward order) set to ``width``."""
        from widelimit.layers._width import replace_hidden_width
        return replace_hidden_width(self, width)

    def __repr__(self) -> str:
        return type(self).__name__ + "()"
