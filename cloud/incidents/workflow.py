"""The incident workflow as data: states, the transitions between them, who may make each one
and what each one requires. Pure (no database): `cloud.incidents.transitions` applies it.

    detected -> accepted -> dispatched -> handled -> verified -> closed -> assessed -> rated
                                 ^            |
                                 +-- reopen --+   (verification failed)
    detected | accepted | dispatched -> rejected  (a false alarm, with a reason)
    detected -> closed                             (auto-close: cleared, not latched, nobody accepted)

docs/incidents.md has the same table for people.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

State = Literal[
    "detected", "accepted", "dispatched", "handled", "verified", "closed", "assessed", "rated", "rejected"
]
STATES: Final[tuple[State, ...]] = (
    "detected",
    "accepted",
    "dispatched",
    "handled",
    "verified",
    "closed",
    "assessed",
    "rated",
    "rejected",
)
#: States in which the incident is open: the ladder runs (in ``detected``) and the console lists it.
OPEN_STATES: Final[frozenset[State]] = frozenset(
    {"detected", "accepted", "dispatched", "handled", "verified"}
)

Role = Literal["grid_worker", "committee", "street", "district", "doctor", "admin"]
ROLES: Final[tuple[Role, ...]] = ("grid_worker", "committee", "street", "district", "doctor", "admin")
#: Roles above the grid worker: they supervise (verify, close, assess) and may act for a handler.
SUPERVISORS: Final[frozenset[Role]] = frozenset({"committee", "street", "district", "admin"})
_STAFF: Final[frozenset[Role]] = SUPERVISORS | {"grid_worker"}

Action = Literal["accept", "dispatch", "handle", "verify", "reopen", "close", "assess", "rate", "reject"]


@dataclass(frozen=True, slots=True)
class Transition:
    """One action of the workflow.

    Attributes:
        action: its name (the library function and the API use it).
        sources: the states it may start from.
        target: the state it leads to.
        roles: who may do it.
        note_required: a note (what was done, why) must be given.
        handler_required: a staff id to dispatch to must be given.
        rating_required: a satisfaction score 1-5 and a comment must be given.
        handler_or_supervisor: only the incident's handler, or a supervisor, may do it.
    """

    action: Action
    sources: frozenset[State]
    target: State
    roles: frozenset[Role]
    note_required: bool = False
    handler_required: bool = False
    rating_required: bool = False
    handler_or_supervisor: bool = False


TRANSITIONS: Final[dict[Action, Transition]] = {
    t.action: t
    for t in (
        Transition("accept", frozenset({"detected"}), "accepted", _STAFF | {"doctor"}),
        Transition(
            "dispatch", frozenset({"accepted", "dispatched"}), "dispatched", _STAFF, handler_required=True
        ),
        Transition(
            "handle",
            frozenset({"dispatched"}),
            "handled",
            _STAFF | {"doctor"},
            note_required=True,
            handler_or_supervisor=True,
        ),
        Transition("verify", frozenset({"handled"}), "verified", SUPERVISORS),
        Transition("reopen", frozenset({"handled"}), "dispatched", SUPERVISORS, note_required=True),
        Transition("close", frozenset({"verified"}), "closed", SUPERVISORS),
        Transition("assess", frozenset({"closed"}), "assessed", SUPERVISORS),
        Transition("rate", frozenset({"assessed"}), "rated", SUPERVISORS, rating_required=True),
        Transition(
            "reject",
            frozenset({"detected", "accepted", "dispatched"}),
            "rejected",
            _STAFF,
            note_required=True,
        ),
    )
}

#: The state each transition's timestamp column records (``accepted_at``, ...).
STAMPS: Final[dict[State, str]] = {
    "accepted": "accepted_at",
    "dispatched": "dispatched_at",
    "handled": "handled_at",
    "verified": "verified_at",
    "closed": "closed_at",
    "assessed": "assessed_at",
    "rated": "rated_at",
    "rejected": "rejected_at",
}


def allowed_from(state: str) -> tuple[Action, ...]:
    """The actions that may start from `state`, in workflow order."""
    return tuple(a for a, t in TRANSITIONS.items() if state in t.sources)


def actions_for(state: str, roles: Iterable[str], *, actor: str, handler: str | None) -> tuple[Action, ...]:
    """The actions someone with `roles` may start from `state` (what the console offers): the
    roles each transition names, and the handler-or-supervisor rule. What an action needs (a
    note, a handler, a score) is checked when it is made."""
    held = frozenset(roles)
    supervisor = bool(SUPERVISORS & held)
    return tuple(
        a
        for a, t in TRANSITIONS.items()
        if state in t.sources
        and t.roles & held
        and (not t.handler_or_supervisor or supervisor or actor == handler)
    )
