"""Upcasting: reading events of an older major version as the current version.

When an event type gets a new major version (a breaking change of its data),
events of the old version stay on the topics for ever. Rather than every
consumer handling every version, `contracts.validation.validate` passes each
incoming envelope through the registered upcasters first, so consumers only
ever see the current version.

To introduce `de.kim.Foo.v2`:

1. change the `Foo` payload model and set its `version = 2`;
2. register a function taking a v1 envelope (a JSON object as a dict) and
   returning the equivalent v2 envelope, `type` included::

       UPCASTERS[("Foo", 1)] = foo_v1_to_v2

   It must return a new dict and leave its argument untouched. Upcasters
   chain, so v1 -> v2 -> v3 needs `("Foo", 1)` and `("Foo", 2)`; an upcaster
   may also turn a retired type into its successor.

The registry is empty while every type is at v1.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from contracts.fields import TYPE_RE

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""Upcasters by (EventName, major version they read)."""


def upcast(
    envelope: dict[str, Any], upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS
) -> dict[str, Any]:
    """Return `envelope` brought to the newest version the upcasters reach.

    Envelopes without a recognisable `type`, or with no upcaster for their
    version, come back unchanged (the same object).
    """
    # A chain visits each upcaster at most once, which also stops a mistaken cycle.
    for _ in range(len(upcasters)):
        type_ = envelope.get("type")
        match = TYPE_RE.fullmatch(type_) if isinstance(type_, str) else None
        upcaster = upcasters.get((match.group(1), int(match.group(2)))) if match else None
        if upcaster is None:
            break
        envelope = upcaster(envelope)
    return envelope
