"""The suite's own scheduling: the tests that share a costly session fixture run in one pytest-xdist worker."""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("probe")
def test_a_group_reaches_the_node_id_that_xdist_schedules_by(request: pytest.FixtureRequest):
    """Under `make test` (--dist loadgroup) xdist sends a group to one worker by the `@group` it appends to the
    node id; a pytest whose node ids xdist cannot change would run each costly fixture in every worker."""
    if getattr(request.config.option, "loadgroup", False):
        assert request.node.nodeid.endswith("@probe"), (request.node.nodeid, "see requirements-dev.txt")
