"""The audit line's millisecond and timestamp numbers are written exactly as ``json.dumps``
writes ``round(value, 3)`` (``metering._r3``), for any float."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_sidecar.metering import _r3


@settings(max_examples=3000, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e12, max_value=1e12)
    | st.floats(min_value=0, max_value=2e9)  # wall-clock seconds, milliseconds
    | st.integers(min_value=-(10**14), max_value=10**14).map(lambda n: n / 1000)
    | st.integers(min_value=-(10**14), max_value=10**14).map(lambda n: n / 2000)
)
def test_r3_is_the_repr_of_the_rounded_value(value: float) -> None:
    assert _r3(value) == json.dumps(round(value, 3))


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 0.0005, 0.0015, -0.0004, 1e-7, 99999999999.9995, 1e11, -1e11, 1e16, 2.5, 1.7e9],
)
def test_r3_edges(value: float) -> None:
    assert _r3(value) == json.dumps(round(value, 3))
