"""The gateway's unit tests run against both paths of the app (tests/unit/gateway_fakes.py)."""

from __future__ import annotations

import pytest

from gateway_fakes import gateway_app


@pytest.fixture(params=[True, False], ids=["fast-path", "flask"])
def app_pool(tmp_path, request):
    """The gateway with scoring answered by the fast path, and by Flask: one contract, both ways."""
    app, pool = gateway_app(tmp_path, fast_path=request.param, max_rows="100")
    return app.test_client(), pool
