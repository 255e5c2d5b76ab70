"""escnn + scikit-learn shim.

escnn 1.0.11 computes kernel bases with ``sklearn.utils.extmath.randomized_svd`` on an
``np.matrix``; scikit-learn >= 1.6 rejects ``np.matrix``, which breaks every group whose basis
needs an SVD (C8, D4, ...). We wrap that single call with ``np.asarray``. Idempotent.
"""

from __future__ import annotations

import functools

import numpy as np

_PATCHED_ATTR = "_eqcvt_asarray_patched"


def patch_escnn_randomized_svd() -> bool:
    """Make escnn's null-space SVD accept scikit-learn's array check. Returns True if patched."""
    from escnn.group import _numerical

    svd = getattr(_numerical, "randomized_svd", None)
    if svd is None or getattr(svd, _PATCHED_ATTR, False):
        return False

    @functools.wraps(svd)
    def randomized_svd(matrix, *args, **kwargs):
        return svd(np.asarray(matrix), *args, **kwargs)

    setattr(randomized_svd, _PATCHED_ATTR, True)
    _numerical.randomized_svd = randomized_svd
    return True


patch_escnn_randomized_svd()
