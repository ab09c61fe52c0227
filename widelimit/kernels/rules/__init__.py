"""Pure kernel rules, one family of layers a file.

Each elementwise nonlinearity is described by its *dual*: a function
``dual(c12, v1, v2, want_dot) -> (T, T_dot)`` giving, for a centred Gaussian pair
``(u, v)`` with ``Var u = v1``, ``Var v = v2``, ``Cov(u, v) = c12``,

    T     = E[phi(u) phi(v)]          (the next NNGP)
    T_dot = E[phi'(u) phi'(v)]        (the NTK multiplier)

``v1`` and ``v2`` broadcast against ``c12``.  The same function, evaluated at
``c12 = v1 = v2``, gives the new variances, so no formula is written twice.
"""
