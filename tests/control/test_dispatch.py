"""Every request type of the protocol has exactly one handler, routed in one table."""

from __future__ import annotations

import inspect
from typing import get_args, get_type_hints

from runforge_protocol import messages as m
from runforged.context import DaemonContext
from runforged.dispatch import ROUTES, unrouted


def test_every_request_type_has_a_handler() -> None:
    assert unrouted() == set()
    assert set(ROUTES) == set(get_args(m.Request))


def test_each_handler_takes_the_context_and_its_own_request_type() -> None:
    for request_type, route in ROUTES.items():
        hints = get_type_hints(route.handler)
        params = list(inspect.signature(route.handler).parameters)
        assert len(params) == 2, route.handler
        assert hints[params[0]] is DaemonContext, route.handler
        assert hints[params[1]] is request_type, route.handler


def test_the_requests_answered_while_stopping_are_the_read_only_and_cancel_ones() -> None:
    assert {t for t, r in ROUTES.items() if r.while_stopping} == {
        m.Hello,
        m.Ping,
        m.Status,
        m.Shutdown,
        m.Cancel,
        m.Active,
        m.Replay,
    }
