"""Strict query strings: every API route refuses a query parameter it does not declare (422 validation_error).

A misspelt parameter must not be ignored silently: `?partiton=0/4` would backfill the whole catalog and
`?forse=true` would promote without force. One app-level dependency compares the request's query keys with
the parameters the matched route declares (its FastAPI dependant, query models included), so a new route
cannot forget it. Routes outside the API schema (the web page and its static files) are left alone: the
page's own address carries its state (?item=, filters) for its script.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.core.errors import ValidationError

# Each route's query parameter names, computed once and kept on the route itself (routes are unhashable, and an
# id() could be reused by a later app's route and hand it another route's names).
DECLARED = "_lookalike_declared_query"


def declared_query(dependant: Dependant) -> frozenset[str]:
    """The query parameter names a route (its dependant and sub-dependencies) declares."""
    names: set[str] = set()
    for param in dependant.query_params:
        annotation = param.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f.alias or name for name, f in annotation.model_fields.items())
        else:
            names.add(param.alias)
    for sub in dependant.dependencies:
        names |= declared_query(sub)
    return frozenset(names)


def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.include_in_schema:
        return
    allowed: frozenset[str] | None = getattr(route, DECLARED, None)
    if allowed is None:
        allowed = declared_query(route.dependant)
        setattr(route, DECLARED, allowed)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in allowed]
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise ValidationError(
            "; ".join(f"query.{name}: unknown parameter" for name in unknown) + f" (this route takes: {takes})"
        )
