"""Which handler answers each request: one table, checked to cover every request type.

One handler per request, in ``runforged/handlers/<area>.py``. ``route`` ties a request
type to its handler so that mypy checks the pair (the handler must take that request);
``tests/control/test_dispatch.py`` checks that every request type of the protocol has
a route. A handler returns the result Struct or raises ``RunforgeError``; an ``async``
handler runs as its own task so that slow work never holds up other clients.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

from runforge_protocol import messages as m
from runforged.context import DaemonContext
from runforged.handlers import daemon, observe, runs, trust
from runforged.server import Answer

R = TypeVar("R", bound=m.RequestBase)


@dataclass(frozen=True)
class Route:
    handler: Callable[[DaemonContext, Any], Any]
    # Still answered while the daemon stops (everything else: SHUTTING_DOWN).
    while_stopping: bool = False
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))


def route(
    request_type: type[R],
    handler: Callable[[DaemonContext, R], Any],
    *,
    while_stopping: bool = False,
) -> tuple[type[m.RequestBase], Route]:
    return request_type, Route(handler, while_stopping)


ROUTES: Mapping[type[m.RequestBase], Route] = dict(
    [
        route(m.Hello, daemon.hello, while_stopping=True),
        route(m.Ping, daemon.ping, while_stopping=True),
        route(m.Status, daemon.status, while_stopping=True),
        route(m.Shutdown, daemon.shutdown, while_stopping=True),
        route(m.TrustPath, trust.trust),
        route(m.UntrustPath, trust.untrust),
        route(m.ListTrusted, trust.list_trusted),
        route(m.GetSettings, trust.settings),
        route(m.Train, runs.train),
        route(m.Cancel, runs.cancel, while_stopping=True),
        route(m.Active, runs.active, while_stopping=True),
        route(m.Replay, runs.replay, while_stopping=True),
        route(m.ListRuns, observe.list_runs),
        route(m.ShowRun, observe.show),
        route(m.GetMetrics, observe.metrics),
        route(m.GetFeatureImportance, observe.feature_importance),
        route(m.GetCoefficients, observe.coefficients),
        route(m.GetInterpretability, observe.interpretability),
        route(m.ExportMarkdown, observe.export_md),
        route(m.InspectDataset, observe.inspect_dataset),
        route(m.InspectArtifact, observe.inspect_artifact),
        route(m.Recover, observe.recover),
    ]
)


def unrouted() -> set[type[m.RequestBase]]:
    """Request types of the protocol that no route answers (empty when complete)."""
    return set(get_args(m.Request)) - set(ROUTES)


class Dispatcher:
    """The daemon's ``Application``: the context's lifecycle, and each request type's
    handler bound to the context."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self._answers = {
            kind: Answer(
                call=functools.partial(r.handler, ctx),
                is_async=r.is_async,
                while_stopping=r.while_stopping,
            )
            for kind, r in ROUTES.items()
        }

    async def start(self) -> None:
        await self.ctx.start()

    async def stop(self, *, keep_runs: bool = False) -> None:
        await self.ctx.stop(keep_runs=keep_runs)

    def answer_for(self, request_type: type) -> Answer | None:
        return self._answers.get(request_type)
