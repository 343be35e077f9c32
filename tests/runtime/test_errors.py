"""Every error code travels as its structured form (over the owner's socket, in scorecards) and comes
back as the family that raises it: a caller catching ``WorkflowError`` or ``NotFound`` on an attached
server catches what it would have caught on the owner."""

from __future__ import annotations

import pytest

from runtime.errors import (
    ActionError,
    ButtressError,
    Code,
    EngineError,
    NotFound,
    PolicyError,
    WorkflowError,
    from_dict,
)

UNFAMILIED = {Code.INTERNAL, Code.AUDIT_BROKEN}
"""Codes raised as the base class itself."""


@pytest.mark.parametrize("code", list(Code), ids=lambda c: c.value)
def test_every_code_round_trips_with_its_family(code: Code) -> None:
    back = from_dict({"code": code.value, "message": "m", "hint": "h", "details": {"x": 1}})
    assert back.code == code and back.message == "m" and back.hint == "h" and back.details == {"x": 1}
    if code in UNFAMILIED:
        assert type(back) is ButtressError
    else:
        assert type(back) is not ButtressError, f"{code.value} comes back without its family"


@pytest.mark.parametrize(
    ("code", "family"),
    [
        (Code.RUN_CONFLICT, WorkflowError),
        (Code.EFFECT_REJECTED, WorkflowError),
        (Code.NOT_FOUND, NotFound),
        (Code.ENGINE_NEWER_SCHEMA, EngineError),
        (Code.LIMIT_RATE, PolicyError),
    ],
)
def test_families_of_the_workflow_effect_and_not_found_codes(code: Code, family: type[ButtressError]) -> None:
    assert type(from_dict({"code": code.value, "message": "m"})) is family


def test_a_message_code_is_an_action_error_and_an_unknown_code_is_internal() -> None:
    assert type(from_dict({"code": "message.not_leased", "message": "m"})) is ActionError
    unknown = from_dict({"code": "something.new", "message": "m"})
    assert unknown.code == Code.INTERNAL and type(unknown) is ButtressError
