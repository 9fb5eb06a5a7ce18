"""One table from exception to HTTP answer; anything not in it is a logged, generic 500."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from src import errors
from src.api.http import Request, Response
from src.services.rules import access

log = logging.getLogger("iaas.api")
RETRY_AFTER_S = "5"


def error_body(error: errors.ApiError) -> dict[str, Any]:
    return {"error": {"code": error.code, "message": error.message, "details": error.details}}


def _unauthorized(exc: Any) -> Response:
    return Response(exc.status, error_body(exc), [("WWW-Authenticate", "Bearer")])


def _not_allowed(exc: Any) -> Response:
    return Response(exc.status, error_body(exc), [("Allow", ", ".join(exc.details["allow"]))])


def _api_error(exc: Any) -> Response:
    return Response(exc.status, error_body(exc))


def _retry_later(exc: Any) -> Response:
    return Response(exc.status, error_body(exc), [("Retry-After", RETRY_AFTER_S)])


def _host_failure(exc: Any, reveal: bool) -> Response:
    error = (errors.HypervisorUnavailable(reason=str(exc)) if reveal else
             errors.HypervisorUnavailable("The hypervisor did not answer; retry shortly."))
    return Response(503, error_body(error), [("Retry-After", RETRY_AFTER_S)])


# First match wins, so subclasses come before their bases. Each answer gets the exception and
# whether the caller may read host detail (admins; the log always has it, by request id).
ANSWERS: tuple[tuple[type[Exception], Callable[[Any, bool], Response]], ...] = (
    (errors.Unauthorized, lambda exc, _reveal: _unauthorized(exc)),
    (errors.MethodNotAllowed, lambda exc, _reveal: _not_allowed(exc)),
    (errors.HostUnavailable, lambda exc, _reveal: _retry_later(exc)),
    (errors.HypervisorUnavailable, lambda exc, _reveal: _retry_later(exc)),
    (errors.TooManyUploads, lambda exc, _reveal: _retry_later(exc)),
    (errors.UploadsBusy, lambda exc, _reveal: _retry_later(exc)),
    (errors.TooManyConnections, lambda exc, _reveal: _retry_later(exc)),
    (errors.ApiError, lambda exc, _reveal: _api_error(exc)),
    (errors.HostFailure, _host_failure),
)


def answer(request: Request, exc: Exception) -> Response:
    """The response for a failure while answering request."""
    for kind, respond in ANSWERS:
        if isinstance(exc, kind):
            if kind is errors.HostFailure:
                log.error("libvirt failed on %s %s (%s): %s", request.method, request.path,
                          request.request_id, exc)
            return respond(exc, access.sees_internals(request.principal))
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return Response(500, error_body(errors.ApiError()))


def refusal(error: errors.ApiError) -> Response:
    """The answer to error outside any request's pipeline (a server refusing a body before the
    app reads it), with the headers the pipeline would add to it (no host detail)."""
    for kind, respond in ANSWERS:
        if isinstance(error, kind):
            return respond(error, False)
    return _api_error(error)  # unreachable: ApiError is in the table


def guarded(request: Request, respond: Callable[[], Response]) -> Response:
    """respond(), with every failure turned into its JSON error response."""
    try:
        return respond()
    except Exception as exc:  # noqa: BLE001 - the boundary: log everything, leak nothing
        return answer(request, exc)
