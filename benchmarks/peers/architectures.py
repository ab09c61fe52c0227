"""Architectures written once against a ``stax``-like namespace.

The same function builds a neural-tangents network (``build(neural_tangents.stax)``)
and a widelimit one (``build(widelimit.layers)``), so the reference values and the
tests cannot drift apart.  Only names common to both libraries are used.
"""
import numpy as np


def inputs(n1=6, n2=4, d=7, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1, d))
    x2 = rng.standard_normal((n2, d))
    x2[0] = x1[0]                     # an identical pair
    x2[1] = x1[1] * 1.0000001         # a nearly collinear pair
    return x1, x2


def _unwrap(layer):
    return layer


def _mlp(S, act, depth=2, param="ntk", W=1.5, b=0.05, width=512):
    layers = []
    for _ in range(depth):
        layers += [S.Dense(width, W_std=W, b_std=b, parameterization=param), act]
    layers += [S.Dense(1, W_std=W, b_std=b, parameterization=param)]
    return S.serial(*layers)


def _resnet(S):
    block = S.serial(S.FanOut(2), S.parallel(S.serial(S.Relu(), S.Dense(256, W_std=1.3, b_std=0.1)),
                                             S.Identity()), S.FanInSum())
    return S.serial(S.Dense(256, W_std=1.4, b_std=0.1), block, block, S.Relu(),
                    S.Dense(1, W_std=1.2, b_std=0.2))


ARCHITECTURES = {
    "relu": lambda S: _mlp(S, S.Relu()),
    "relu_standard": lambda S: _mlp(S, S.Relu(), param="standard"),
    "relu_nobias": lambda S: _mlp(S, S.Relu(), b=None),
    "leaky": lambda S: _mlp(S, S.LeakyRelu(0.2)),
    "abrelu": lambda S: _mlp(S, S.ABRelu(-0.3, 1.2)),
    "abs": lambda S: _mlp(S, S.Abs()),
    "erf": lambda S: _mlp(S, S.Erf(a=1.2, b=0.7, c=0.1)),
    "sigmoid_like": lambda S: _mlp(S, S.Sigmoid_like()),
    "gelu": lambda S: _mlp(S, S.Gelu()),
    "sign": lambda S: _mlp(S, S.Sign(), depth=1),
    "sin": lambda S: _mlp(S, S.Sin(a=1.1, b=0.9, c=0.3)),
    "cos": lambda S: _mlp(S, S.Cos(a=1.0, b=0.8, c=0.0)),
    "rbf": lambda S: _mlp(S, S.Rbf(gamma=0.4), depth=1),
    "gabor": lambda S: _mlp(S, S.Gabor()),
    "exp": lambda S: _mlp(S, S.Exp(a=0.7, b=0.4), W=1.0),
    "expnormalized": lambda S: _mlp(S, S.ExpNormalized(gamma=0.8, shift=-1.0)),
    "gaussian": lambda S: _mlp(S, S.Gaussian(a=1.0, b=-0.6)),
    "hermite3": lambda S: S.serial(S.Dense(512, W_std=1.0, b_std=None), S.LayerNorm(),
                                   S.Hermite(3), S.Dense(1, W_std=1.0, b_std=None)),
    "monomial3": lambda S: _mlp(S, S.Monomial(3), depth=1, W=0.8),
    "rectified_monomial2": lambda S: _mlp(S, S.RectifiedMonomial(2), depth=1, W=0.9),
    "polynomial": lambda S: _mlp(S, S.Polynomial([0.1, -0.5, 0.3, 0.2]), depth=1, W=0.8),
    "layernorm": lambda S: S.serial(S.Dense(512, W_std=1.5, b_std=0.3), S.LayerNorm(), S.Relu(),
                                    S.Dense(512, W_std=1.2, b_std=0.1), S.LayerNorm(), S.Erf(),
                                    S.Dense(1, W_std=1.0, b_std=0.1)),
    "resnet": _resnet,
    "prod_concat": lambda S: S.serial(
        S.Dense(128, W_std=1.2, b_std=0.1), S.FanOut(3),
        S.parallel(S.Relu(), S.Erf(), S.serial(S.Gelu(), S.Dense(64, W_std=1.0, b_std=0.2))),
        S.FanInConcat(), S.Dense(32, W_std=1.1, b_std=0.1), S.FanOut(2),
        S.parallel(S.Identity(), S.Dense(32, W_std=0.9, b_std=0.0)), S.FanInProd(),
        S.Dense(1, W_std=1.0, b_std=0.1)),
    "deep20": lambda S: _mlp(S, S.Relu(), depth=20),
}


# ---- image architectures: build(S, ch) with ch the channel axis (-1 for neural-tangents'
# NHWC, 1 for widelimit's NCHW); inputs are generated in PyTorch layout (N, C, *S) and
# moved to channels-last for neural-tangents by ``to_channels_last``.

def inputs_images(shape, n1=4, n2=3, seed=1):
    """x1 (n1, *shape), x2 (n2, *shape) in PyTorch layout; x2[0] == x1[0]."""
    rng = np.random.default_rng(seed)
    x1 = rng.standard_normal((n1,) + tuple(shape))
    x2 = rng.standard_normal((n2,) + tuple(shape))
    x2[0] = x1[0]
    return x1, x2


def to_channels_last(x):
    return np.moveaxis(x, 1, -1)


def _cnn(S, pool, padding="SAME", strides=(1, 1), param="ntk", act=None, filt=(3, 3)):
    act = act or S.Relu()
    return S.serial(S.Conv(16, filt, strides, padding, W_std=1.5, b_std=0.1, parameterization=param),
                    act, S.Conv(16, filt, None, padding, W_std=1.3, b_std=0.2,
                                parameterization=param), act, pool,
                    S.Dense(1, W_std=1.1, b_std=0.05, parameterization=param))


IMAGE_ARCHITECTURES = {
    "conv_gap": ((3, 6, 5), lambda S, ch: _cnn(S, S.GlobalAvgPool())),
    "conv_gsp_erf": ((2, 5, 5), lambda S, ch: _cnn(S, S.GlobalSumPool(), act=S.Erf())),
    "conv_flatten_valid": ((3, 7, 6), lambda S, ch: _cnn(S, S.Flatten(), padding="VALID",
                                                          strides=(2, 1), filt=(3, 2))),
    "conv_flatten_same_strided": ((2, 7, 6), lambda S, ch: _cnn(S, S.Flatten(), strides=(2, 3))),
    "conv_circular_gap": ((2, 6, 6), lambda S, ch: _cnn(S, S.GlobalAvgPool(), padding="CIRCULAR",
                                                         strides=(2, 1))),
    "conv_standard": ((3, 5, 5), lambda S, ch: _cnn(S, S.GlobalAvgPool(), param="standard")),
    "conv_avgpool": ((2, 8, 6), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.AvgPool((2, 2), (2, 2), "VALID"), S.Conv(8, (2, 2), None, "SAME", W_std=1.2, b_std=0.1),
        S.Relu(), S.AvgPool((3, 2), (1, 2), "SAME"), S.Flatten(), S.Dense(1, W_std=1.0))),
    "conv_avgpool_edges": ((2, 6, 5), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.AvgPool((3, 3), (2, 1), "SAME", normalize_edges=True), S.Flatten(), S.Dense(1))),
    "conv_sumpool_circular": ((2, 6, 5), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "CIRCULAR", W_std=1.4, b_std=0.1), S.Gelu(),
        S.SumPool((2, 3), (2, 2), "CIRCULAR"), S.GlobalAvgPool(), S.Dense(1))),
    "conv_layernorm": ((3, 5, 6), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.3), S.LayerNorm(axis=ch), S.Relu(),
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.3), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1))),
    "conv1d": ((3, 9), lambda S, ch: S.serial(
        S.Conv(8, (3,), (2,), "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2,), None, "VALID", W_std=1.3, b_std=0.1), S.Erf(), S.GlobalAvgPool(),
        S.Dense(1))),
    "conv3d": ((2, 3, 4, 3), lambda S, ch: S.serial(
        S.Conv(8, (2, 2, 2), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2, 1, 2), (1, 2, 1), "CIRCULAR", W_std=1.4, b_std=0.1), S.Relu(),
        S.GlobalAvgPool(), S.Dense(1))),
    "conv3d_flatten": ((2, 3, 4, 3), lambda S, ch: S.serial(
        S.Conv(8, (2, 2, 2), None, "VALID", W_std=1.4, b_std=0.1), S.Relu(), S.Flatten(),
        S.Dense(1))),
    # neural-tangents 0.6.5 applies an unshared filter transposed after a full-spatial Conv
    # (it does not undo its internal axis reversal for ConvLocal), so the filter here is
    # square; asymmetric ConvLocal filters are checked by Monte Carlo instead.
    "convlocal": ((2, 5, 5), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.ConvLocal(8, (2, 2), None, "VALID", W_std=1.3, b_std=0.2), S.Relu(),
        S.GlobalAvgPool(), S.Dense(1))),
    "convlocal_flatten": ((2, 5, 5), lambda S, ch: S.serial(
        S.ConvLocal(8, (3, 3), (2, 1), "SAME", W_std=1.4, b_std=0.1), S.Relu(), S.Flatten(),
        S.Dense(1))),
}


# a fixed weighted graph on 6 nodes (pattern[i, j]: edge i -> j), shared by all inputs;
# neural-tangents receives it per input through kernel_fn(..., pattern=(A1, A2))
GRAPH_PATTERN = np.array([[1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0], [0, 0.5, 1, 1, 0, 0],
                          [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1], [1, 0, 0, 0, 2, 1]], float)


def _aggregate(S, ch):
    return S.Aggregate() if ch == -1 else S.Aggregate(GRAPH_PATTERN)


def _attn(S, **kw):
    return S.GlobalSelfAttention(8, 8, 8, 2, W_key_std=1.3, W_value_std=1.2, W_query_std=0.9,
                                 W_out_std=1.1, b_std=0.1, **kw)


IMAGE_ARCHITECTURES.update({
    "attention_softmax": ((3, 6), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1), _attn(S), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1))),
    "attention_2d_sum_pe": ((2, 3, 4), lambda S, ch: S.serial(
        S.Conv(8, (2, 2), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        _attn(S, pos_emb_type="SUM", W_pos_emb_std=0.7), S.Erf(), S.Flatten(), S.Dense(1))),
    "attention_concat_decay": ((3, 5), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1),
        _attn(S, pos_emb_type="CONCAT", pos_emb_decay_fn=lambda d: 1.0 / (1.0 + d),
              n_chan_pos_emb=4, val_pos_emb=True), S.Relu(),
        _attn(S, attention_mechanism="IDENTITY"), S.GlobalAvgPool(), S.Dense(1))),
    "attention_relu_abs": ((2, 5), lambda S, ch: S.serial(
        S.Conv(8, (2,), None, "SAME", W_std=1.4), _attn(S, attention_mechanism="RELU"), S.Relu(),
        _attn(S, attention_mechanism="ABS", pos_emb_type="SUM"), S.GlobalAvgPool(), S.Dense(1))),
    "graph_aggregate": ((3, 6), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1), S.Relu(), _aggregate(S, ch),
        S.Conv(8, (1,), W_std=1.2, b_std=0.1), S.Relu(), _aggregate(S, ch), S.GlobalSumPool(),
        S.Dense(1))),
})

# attention with the standard 1/sqrt(d) scaling: neural-tangents has a closed form only for
# the identity mechanism
IMAGE_ARCHITECTURES.update({
    "attention_sqrt_identity": ((3, 5), lambda S, ch: S.serial(
        S.Conv(8, (2,), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        _attn(S, linear_scaling=False, attention_mechanism="IDENTITY"), S.Relu(),
        S.GlobalAvgPool(), S.Dense(1))),
    "attention_sqrt_identity_pe": ((2, 2, 3), lambda S, ch: S.serial(
        S.Conv(8, (1, 1), W_std=1.4, b_std=0.1),
        _attn(S, linear_scaling=False, attention_mechanism="IDENTITY", pos_emb_type="CONCAT",
              pos_emb_decay_fn=lambda d: 1.0 / (1.0 + d), n_chan_pos_emb=3), S.Erf(),
        _attn(S, linear_scaling=False, attention_mechanism="IDENTITY", pos_emb_type="SUM",
              val_pos_emb=True, W_pos_emb_std=0.6), S.Flatten(), S.Dense(1))),
})


# ---- masked (variable-length) inputs: name -> (shape, build, mask_constant, lengths1,
# lengths2); positions at and after an example's length along the last spatial axis hold
# mask_constant in every channel (``inputs_padded``); both libraries get mask_constant.

def inputs_padded(shape, lengths1, lengths2, constant, seed=2):
    """Padded x1, x2 (PyTorch layout); x2[0] == x1[0] (give them the same length)."""
    x1, x2 = inputs_images(shape, len(lengths1), len(lengths2), seed)
    for x, lengths in ((x1, lengths1), (x2, lengths2)):
        for i, n in enumerate(lengths):
            x[i, ..., n:] = constant
    return x1, x2


NAN = float("nan")
MASKED_ARCHITECTURES = {
    "masked_conv_gap": ((3, 9), lambda S, ch: S.serial(
        S.Conv(8, (3,), (2,), "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2,), None, "VALID", W_std=1.3, b_std=0.1), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1, W_std=1.1, b_std=0.05)), NAN, (9, 6, 0, 2), (9, 7, 4)),
    "masked_pool": ((2, 10), lambda S, ch: S.serial(
        S.Conv(8, (3,), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.AvgPool((3,), (2,), "SAME"), S.Conv(8, (2,), None, "CIRCULAR", W_std=1.2),
        S.Relu(), S.SumPool((2,), (1,), "VALID"), S.GlobalSumPool(), S.Dense(1)),
     NAN, (10, 7, 4), (10, 5, 8)),
    "masked_flatten_2d": ((2, 3, 5), lambda S, ch: S.serial(
        S.Conv(8, (2, 2), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.AvgPool((2, 2), (1, 1), "SAME", normalize_edges=True), S.Flatten(), S.Dense(1)),
     -3.0, (5, 3, 2), (5, 4)),
    "masked_attention_softmax": ((3, 7), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1), _attn(S), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1)), NAN, (7, 5, 0, 1), (7, 4, 6)),
    "masked_attention_pe": ((2, 2, 5), lambda S, ch: S.serial(
        S.Conv(8, (2, 2), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        _attn(S, pos_emb_type="SUM", W_pos_emb_std=0.7, val_pos_emb=True), S.Erf(),
        _attn(S, attention_mechanism="RELU", pos_emb_type="CONCAT",
              pos_emb_decay_fn=lambda d: 1.0 / (1.0 + d), n_chan_pos_emb=4), S.Relu(),
        S.GlobalAvgPool(), S.Dense(1)), 5.0, (5, 3, 4), (5, 2)),
    "masked_attention_sqrt_identity": ((3, 6), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1),
        _attn(S, linear_scaling=False, attention_mechanism="IDENTITY", pos_emb_type="SUM",
              W_pos_emb_std=0.8), S.Relu(), S.Conv(8, (2,), None, "SAME", W_std=1.2),
        S.Relu(), S.GlobalAvgPool(), S.Dense(1)), NAN, (6, 4, 2), (6, 5, 3)),
    "masked_graph": ((3, 6), lambda S, ch: S.serial(
        S.Conv(8, (1,), W_std=1.4, b_std=0.1), S.Relu(), _aggregate(S, ch),
        S.Conv(8, (1,), W_std=1.2, b_std=0.1), S.Relu(), S.GlobalAvgPool(), S.Dense(1)),
     NAN, (6, 4, 5), (6, 3)),
}


def _resize_shape(ch, *spatial):
    """An ImageResize ``shape`` keeping batch and channels: NHWC for ch=-1, NCHW for ch=1."""
    return (-1,) + spatial + (-1,) if ch == -1 else (-1, -1) + spatial


def _conv_t_net(S, shape_in, conv_t, head, param="ntk"):
    n = len(shape_in) - 1
    return S.serial(S.Conv(8, (2,) * n, None, "SAME", W_std=1.4, b_std=0.1, parameterization=param),
                    S.Relu(), conv_t, S.Relu(), head, S.Dense(1, W_std=1.1, b_std=0.05,
                                                              parameterization=param))


# neural-tangents 0.6.5's ImageResize ignores the internal reversal of spatial axes that
# each full-spatial Conv toggles, so it resizes the wrong axes after an odd number of
# convolutions; the resizes here come first or after two convolutions, where it is right.
IMAGE_ARCHITECTURES.update({
    "convtranspose_same_gap": ((2, 4, 3), lambda S, ch: _conv_t_net(
        S, (2, 4, 3), S.ConvTranspose(8, (3, 2), (2, 1), "SAME", W_std=1.3, b_std=0.2),
        S.GlobalAvgPool())),
    "convtranspose_valid_flatten": ((2, 4, 3), lambda S, ch: _conv_t_net(
        S, (2, 4, 3), S.ConvTranspose(8, (2, 3), (3, 2), "VALID", W_std=1.3, b_std=0.2),
        S.Flatten())),
    "convtranspose_circular_gap": ((2, 4, 4), lambda S, ch: _conv_t_net(
        S, (2, 4, 4), S.ConvTranspose(8, (3, 3), (2, 1), "CIRCULAR", W_std=1.3, b_std=0.2),
        S.GlobalAvgPool())),
    "convtranspose_standard": ((2, 3, 4), lambda S, ch: _conv_t_net(
        S, (2, 3, 4), S.ConvTranspose(8, (2, 3), (2, 2), "SAME", W_std=1.3, b_std=0.2,
                                      parameterization="standard"),
        S.GlobalAvgPool(), param="standard")),
    "convtranspose1d": ((2, 5), lambda S, ch: S.serial(
        S.ConvTranspose(8, (3,), (2,), "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.ConvTranspose(8, (4,), (3,), "VALID", W_std=1.3, b_std=0.1), S.Erf(),
        S.ConvTranspose(8, (5,), (1,), "CIRCULAR", W_std=1.2), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1))),
    "convtranspose3d": ((2, 2, 3, 2), lambda S, ch: _conv_t_net(
        S, (2, 2, 3, 2), S.ConvTranspose(8, (2, 2, 3), (2, 1, 2), "CIRCULAR", W_std=1.3,
                                         b_std=0.2), S.GlobalAvgPool())),
    "resize_linear_up_down": ((2, 4, 5), lambda S, ch: S.serial(
        S.ImageResize(_resize_shape(ch, 7, 9), "linear"),
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2, 2), None, "SAME", W_std=1.3, b_std=0.1), S.Relu(),
        S.ImageResize(_resize_shape(ch, 3, 4), "bilinear"), S.GlobalAvgPool(), S.Dense(1))),
    "resize_noantialias_keep": ((2, 6, 5), lambda S, ch: S.serial(
        S.Conv(8, (3, 3), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2, 2), None, "SAME", W_std=1.3, b_std=0.1), S.Relu(),
        S.ImageResize(_resize_shape(ch, 4, -1), "linear", antialias=False),
        S.GlobalAvgPool(), S.Dense(1))),
    "resize_nearest_flatten": ((2, 5, 4), lambda S, ch: S.serial(
        S.Conv(8, (2, 2), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Conv(8, (2, 2), None, "SAME", W_std=1.3, b_std=0.1), S.Relu(),
        S.ImageResize(_resize_shape(ch, 8, 3), "nearest"), S.Flatten(), S.Dense(1))),
    "resize1d_convtranspose": ((2, 7), lambda S, ch: S.serial(
        S.ImageResize(_resize_shape(ch, 12), "linear"), S.Conv(8, (3,), None, "SAME", W_std=1.4),
        S.Relu(), S.ImageResize(_resize_shape(ch, 5), "linear"),
        S.ConvTranspose(8, (3,), (2,), "SAME", W_std=1.3, b_std=0.1), S.Relu(),
        S.ImageResize(_resize_shape(ch, 4), "nearest"), S.GlobalAvgPool(), S.Dense(1))),
})


# finite-layer checks (module outputs against jax.image.resize / stax.ConvTranspose apply_fn)
RESIZE_APPLY_METHODS = ("nearest", "linear", "cubic", "lanczos3", "lanczos5")
RESIZE_APPLY_SHAPES = (((2, 3, 7, 5), (2, 3, 4, 11)), ((2, 3, 4, 9), (2, 3, 13, 3)),
                       ((1, 2, 17), (1, 2, 5)), ((1, 2, 3, 4, 5), (1, 2, 5, 2, 5)))
CONV_TRANSPOSE_APPLY_CASES = (((2, 2, 5, 4), (3, 2), (2, 1), "SAME"),
                              ((2, 2, 5, 4), (3, 2), (2, 3), "VALID"),
                              ((2, 2, 4, 3), (2, 2), (3, 2), "VALID"),
                              ((2, 2, 5, 4), (3, 3), (2, 2), "CIRCULAR"),
                              ((2, 2, 4, 3), (4, 1), (1, 2), "CIRCULAR"),
                              ((2, 2, 2), (9,), (1,), "CIRCULAR"),
                              ((2, 2, 3), (2,), (4,), "SAME"),
                              ((2, 2, 3, 2, 3), (2, 3, 1), (2, 1, 3), "VALID"))


# ---- Dense on sequences and images: per position, on the channel axis (a 1x1 convolution).
# ``ch`` is each library's own channel axis (NT: -1, widelimit: 1), as for the images above.
IMAGE_ARCHITECTURES.update({
    "dense_images_gap": ((3, 5, 4), lambda S, ch: S.serial(
        S.Dense(16, W_std=1.4, b_std=0.1, channel_axis=ch), S.Relu(),
        S.Conv(8, (2, 2), None, "SAME", W_std=1.3, b_std=0.1), S.Relu(),
        S.Dense(8, W_std=1.2, b_std=0.2, channel_axis=ch), S.Erf(), S.GlobalAvgPool(),
        S.Dense(1, W_std=1.1, b_std=0.05))),
    "dense_images_flatten_standard": ((2, 4, 3), lambda S, ch: S.serial(
        S.Dense(16, W_std=1.4, b_std=0.1, parameterization="standard", channel_axis=ch),
        S.Relu(), S.Dense(8, W_std=1.2, b_std=0.2, parameterization="standard", channel_axis=ch),
        S.Gelu(), S.Flatten(), S.Dense(1, W_std=1.1, b_std=0.05, parameterization="standard"))),
    "dense_seq_flatten_nobias": ((3, 6), lambda S, ch: S.serial(
        S.Conv(8, (2,), None, "SAME", W_std=1.4, b_std=0.1), S.Relu(),
        S.Dense(8, W_std=1.3, channel_axis=ch), S.Relu(), S.Flatten(), S.Dense(1))),
})


def inputs_tokens(shape, lengths1=None, lengths2=None, constant=None, n1=4, n2=3, seed=3):
    """x1 (n1, L, d), x2 (n2, L, d): channels-last tokens, the same for both libraries;
    x2[0] == x1[0].  With lengths, tokens at and after an example's length hold ``constant``."""
    rng = np.random.default_rng(seed)
    if lengths1 is not None:
        n1, n2 = len(lengths1), len(lengths2)
    x1 = rng.standard_normal((n1,) + tuple(shape))
    x2 = rng.standard_normal((n2,) + tuple(shape))
    x2[0] = x1[0]
    if lengths1 is not None:
        for x, lengths in ((x1, lengths1), (x2, lengths2)):
            for i, n in enumerate(lengths):
                x[i, n:] = constant
    return x1, x2


# ---- NT-style (N, L, d) token inputs, channels last, given as they are to both libraries: the
# first Dense reads channel_axis=-1 (neural-tangents' default; widelimit moves the inputs to
# (N, d, L)); later layers use each library's own layout ``ch``.  The standard transformer
# kernel pattern serial(Dense, Relu, GlobalSelfAttention, Relu, GlobalAvgPool, Dense).
# name -> (shape (L, d), build(S, ch), mask_constant or None, lengths1, lengths2)
TOKEN_ARCHITECTURES = {
    "tokens_transformer": ((5, 6), lambda S, ch: S.serial(
        S.Dense(64, W_std=1.3, b_std=0.1, channel_axis=-1), S.Relu(),
        S.GlobalSelfAttention(64, 64, 64, 4, W_key_std=1.2, W_value_std=1.1, W_query_std=0.9,
                              W_out_std=1.0, b_std=0.1), S.Relu(), S.GlobalAvgPool(),
        S.Dense(1, W_std=1.1, b_std=0.05)), None, None, None),
    "tokens_transformer_mlp_pe": ((4, 5), lambda S, ch: S.serial(
        S.Dense(32, W_std=1.3, b_std=0.1, channel_axis=-1), S.Relu(),
        _attn(S, pos_emb_type="SUM", W_pos_emb_std=0.7), S.Relu(),
        S.Dense(32, W_std=1.2, b_std=0.1, channel_axis=ch), S.Gelu(), S.Flatten(),
        S.Dense(1)), None, None, None),
    "tokens_masked": ((6, 4), lambda S, ch: S.serial(
        S.Dense(16, W_std=1.4, b_std=0.1, channel_axis=-1), S.Relu(), _attn(S), S.Relu(),
        S.GlobalAvgPool(), S.Dense(1)), float("nan"), (6, 4, 2), (6, 3)),
}
