"""Active units count the latent dimensions whose encoder mean varies across data points."""

from __future__ import annotations

import pytest
import torch

from smvi.core.diagnostics import active_units
from smvi.core.models import LinearGaussian


def test_active_units_counts_dimensions_whose_mean_varies_with_x():
    m = LinearGaussian.random(6, 4, seed=0)
    x = torch.randn(500, 6, dtype=torch.float64)
    assert active_units(m, x) == 4
    with torch.no_grad():
        m.A[1:] = 0.0  # dimensions 1..3 ignore x: collapsed to a constant mean
        m.A[0] *= 0.01 / m.A[0].norm()  # dimension 0: Var_x(mean) = 1e-4, below the 0.01 threshold
    assert active_units(m, x) == 0
    assert active_units(m, x, threshold=1e-5) == 1
    with pytest.raises(ValueError, match="at least 2 points"):
        active_units(m, x[:1])
