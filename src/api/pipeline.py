"""The request path, in order: authenticate -> idempotency -> dispatch (an upload admitted
first) -> audit -> metrics and log.

Every failure on the way becomes its JSON answer through failures.guarded.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from src import errors
from src.api import failures
from src.api.handlers import Handlers
from src.api.http import Request, Response
from src.api.metrics import Metrics
from src.api.router import Router
from src.api.validation import parse_query
from src.services.accounts.audit import AuditTrail
from src.services.accounts.auth import TokenService
from src.services.accounts.idempotency import (
    IdempotencyStore,
    StoredResponse,
    check_key,
    request_hash,
)
from src.services.images.admissions import Admission
from src.services.images.files import Intake
from src.services.rules import access
from src.services.rules.access import Principal

log = logging.getLogger("iaas.api")
MUTATING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
KNOWN_METHODS = ("GET", "HEAD", "OPTIONS", *MUTATING_METHODS)
StartResponse = Callable[..., Any]


class Pipeline:
    """The WSGI callable: one request through every stage."""

    def __init__(self, router: Router, handlers: Handlers, tokens: TokenService,
                 idempotency: IdempotencyStore, audit: AuditTrail, metrics: Metrics,
                 intake: Intake) -> None:
        self.router = router
        self._handlers = handlers
        self._tokens = tokens
        self._idempotency = idempotency
        self._audit = audit
        self._metrics = metrics
        self._intake = intake

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ, "req-" + uuid.uuid4().hex)
        request.route = self.router.label(request)
        try:
            response = failures.guarded(request, lambda: self._authenticated(request))
        finally:  # the upload's slot and reserved bytes are held until its request ends
            if request.upload is not None:
                request.upload.release()
        self._record(request, response)
        body = response.encoded()
        start_response(response.wsgi_status(), [
            ("Content-Type", response.content_type), ("X-Request-Id", request.request_id),
            *response.headers])
        self._observe(request, response, time.perf_counter() - started)
        return body

    def _authenticated(self, request: Request) -> Response:
        """Raises: Unauthorized, and whatever the later stages raise."""
        authorization = request.header("Authorization")
        if request.upload is not None:  # the server checked the token before reading the body
            request.principal = request.upload.caller
        elif self.router.is_public(request.path):
            # Optional there: a valid token shows an admin more (health details), nothing less.
            request.principal = self._tokens.identify(authorization)
        elif request.path.startswith("/v1/") or request.route != "unmatched":
            request.principal = self._tokens.authenticate(authorization)
        key = request.header("Idempotency-Key")
        if key is None or request.method != "POST" or request.principal is None:
            return self._dispatch(request)
        return self._at_most_once(request, key)

    def _at_most_once(self, request: Request, key: str) -> Response:
        """A POST with an Idempotency-Key: the stored answer, or run it and keep its answer.

        Raises: BadRequest, IdempotencyKeyReused, IdempotencyKeyInUse.
        """
        check_key(key)
        if not self.router.replayable(request):
            raise errors.BadRequest(reason="This call takes no Idempotency-Key: its answer holds "
                                           "a secret, which is never stored.")
        token_id = request.caller.token_id
        digest = request_hash(request.method, request.target, request.raw_body())
        stored = self._idempotency.begin(token_id, key, digest)
        if stored is not None:
            return Response(stored.status, stored.body,
                            [*stored.headers, ("Idempotent-Replayed", "true")],
                            content_type=stored.content_type)
        response = failures.guarded(request, lambda: self._dispatch(request))
        self._idempotency.finish(token_id, key, StoredResponse(
            status=response.status, body=response.body, headers=response.headers,
            content_type=response.content_type))
        return response

    def _dispatch(self, request: Request) -> Response:
        """Raises: NotFound, MethodNotAllowed, Unauthorized, Forbidden, InvalidQuery, ..."""
        route, params = self.router.match(request)
        access.authorize(request.principal, route.access)
        request.params = parse_query(request.query, route.query)
        if route.file_body and request.upload is None:
            request.upload = self.admit_upload(request.caller, params,
                                               request.announced_length())
        return route.call(self._handlers, request, params)

    def admit_upload(self, caller: Principal, params: dict[str, str],
                     length: int | None) -> Admission:
        """The one admission of an upload to the file route with params (a server that reads
        the body before the app asks from the headers: App.admit_upload).

        Raises: what Intake.admit raises.
        """
        return self._intake.admit(params["image"], caller, length)

    def _record(self, request: Request, response: Response) -> None:
        """Audit a mutating request of a caller with a valid token."""
        if response.status == 401:
            self._metrics.unauthorized(request.route)
        if request.method not in MUTATING_METHODS or request.principal is None:
            return  # anonymous requests are counted in /metrics, never written
        body = response.body if isinstance(response.body, dict) else {}
        resource = body.get("vm_id") or body.get("id") or body.get("project")
        self._audit.record(request.principal, request.method, request.path, response.status,
                           request.request_id, str(resource) if resource else None,
                           response.touched)

    def _observe(self, request: Request, response: Response, elapsed: float) -> None:
        method = request.method if request.method in KNOWN_METHODS else "other"
        self._metrics.observe(method, request.route, response.status, elapsed)
        log.info("%s", json.dumps({
            "event": "request", "method": request.method, "path": request.path,
            "route": request.route, "status": response.status,
            "duration_ms": round(elapsed * 1000, 2), "request_id": request.request_id,
            "project": request.principal.project if request.principal else None}))
