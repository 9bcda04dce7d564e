"""The PSI used for drift: zero for the same distribution, large for a shifted one."""

from __future__ import annotations

import numpy as np
import pandas as pd

from validation.drift import psi, shares


def test_shares_have_an_other_bucket() -> None:
    s = shares(pd.Series([1.0, 1.0, 2.0, 9.0]), [1.0, 2.0])
    assert np.allclose(s, [0.5, 0.25, 0.25])


def test_psi_zero_for_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    cats = [1.0, 2.0, 3.0, 4.0, 5.0]
    a = shares(pd.Series(rng.choice(cats, 5000)), cats)
    b = shares(pd.Series(rng.choice(cats, 5000)), cats)
    skewed = shares(pd.Series(rng.choice(cats, 5000, p=[0.6, 0.1, 0.1, 0.1, 0.1])), cats)
    assert psi(a, a) == 0.0
    assert psi(a, b) < 0.01  # sampling noise only
    assert psi(skewed, a) > 0.25  # the default threshold
    assert psi(skewed, a) == psi(a, skewed)  # symmetric by construction
