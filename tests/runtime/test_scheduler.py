"""The scheduler hands every step kind the spec allows to an execution of its own."""

from __future__ import annotations

from typing import get_args

from runtime.schema.spec import StepKind
from runtime.workflows.scheduler import STEPS


def test_every_step_kind_has_an_execution() -> None:
    assert set(STEPS) == set(get_args(StepKind))
