"""waitress's parser and channel for image uploads: a body may pass 1 MiB only once the app has
admitted its request from the headers alone (src/app.py `admit_upload`).

waitress reads a whole request, a large body into a temporary file, before the app sees it. So
the upload route's larger limit is given per request, after the headers: a valid token, an image
the caller may upload to (`pending` or `error`), and what IAAS_IMAGE_MAX_BYTES and images_gb
leave; at most IAAS_MAX_UPLOADS_PER_PROJECT such bodies of one project, and one per image, at
once. Anything else keeps the 1 MiB limit, and a larger body is answered, with the app's own
error, as soon as that is known (from Content-Length, or once 1 MiB of a chunked body came).
"""
from __future__ import annotations

import copy
import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.utilities import Error, RequestEntityTooLarge

from src import errors
from src.api.failures import refusal
from src.app import App
from src.services.images.files import Admission

log = logging.getLogger("iaas.serve")
UPLOAD_PATH = re.compile(r"/v1/images/([^/]+)/file")  # PUT: the one route whose body is a file
Gate = Callable[[str | None, str, int | None], Admission]


class UploadSlots:
    """The admitted uploads until their requests end: at most per_project of one project, and
    one per image (a second would be refused by the app only after its body had arrived)."""

    def __init__(self, per_project: int) -> None:
        self._per_project = per_project
        self._lock = threading.Lock()
        self._held: dict[object, Admission] = {}

    def take(self, admission: Admission) -> object:
        """A ticket to give back. Raises: UploadInProgress, TooManyUploads."""
        with self._lock:
            held = self._held.values()
            if any(other.image_id == admission.image_id for other in held):
                raise errors.UploadInProgress(image=admission.image_name)
            if sum(other.project == admission.project for other in held) >= self._per_project:
                raise errors.TooManyUploads(project=admission.project, limit=self._per_project)
            ticket = object()
            self._held[ticket] = admission
            return ticket

    def give_back(self, ticket: object) -> None:
        """Free the ticket's slot; a ticket already given back changes nothing."""
        with self._lock:
            self._held.pop(ticket, None)

    def count(self) -> int:
        with self._lock:
            return len(self._held)


class AppRefusal(Error):
    """waitress's error answer, in the API's JSON envelope with the app's headers."""

    def __init__(self, error: errors.ApiError) -> None:
        super().__init__(error.message)
        self.error = error
        self.code = error.status

    # The stubs say the body is str; waitress's own to_response returns bytes, as this does.
    def to_response(  # type: ignore[override]
            self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        response = refusal(self.error)
        headers = [("Content-Type", "application/json"),
                   ("X-Request-Id", "req-" + uuid.uuid4().hex), *response.headers]
        return response.wsgi_status(), headers, b"".join(response.encoded())


class UploadParser(HTTPRequestParser):
    """waitress's request parser, with the upload route's body limit given per request."""

    gate: Gate  # the three are set by the subclass make_channel_class builds
    slots: UploadSlots
    upload_adj: Any  # the server's settings, to copy with an upload's limit
    refused: errors.ApiError | None = None  # the answer to a body over this request's limit
    ticket: object | None = None

    def parse_header(self, header_plus: bytes) -> None:
        # waitress parses a request's headers again when it read them whole but answered
        # `100 Continue` to a request without a body: nothing of the first parse may stay.
        self.release()
        self.ticket, self.refused, self.adj = None, None, self.upload_adj
        super().parse_header(header_plus)
        # Read by name: the stubs type command as bytes, which waitress has decoded by now.
        method, path = getattr(self, "command", ""), getattr(self, "path", "")
        found = UPLOAD_PATH.fullmatch(path) if method == "PUT" and isinstance(path, str) else None
        # A body within the server's limit needs no admission: the gate runs in waitress's one
        # I/O thread, so only a request that would be read past that limit may cost a look-up.
        if found is not None and (self.chunked or
                                  self.content_length >= self.upload_adj.max_request_body_size):
            self._admit(found.group(1))

    def _admit(self, image: str) -> None:
        """Raise this request's body limit if the app admits it; else keep 1 MiB, and the
        reason to answer a larger body with (a smaller one still reaches the app)."""
        try:
            admission = self.gate(self.headers.get("AUTHORIZATION"), image,
                                  None if self.chunked else self.content_length)
            self.ticket = self.slots.take(admission)
        except errors.ApiError as exc:
            self.refused = exc
            return
        except Exception:  # the database, say: it must never end the I/O loop
            log.exception("could not check an upload to %s before its body", image)
            self.refused = errors.ApiError()
            return
        self.refused = admission.beyond
        self.adj = copy.copy(self.upload_adj)
        self.adj.max_request_body_size = admission.limit + 1  # waitress refuses >=

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.completed and self.body_rcv is None:
            # No body: nothing to continue (waitress would answer `100 Continue` to a finished
            # request and then read what follows as more of its headers).
            self.expect_continue = False
        if self.error is not None:
            # Answer now: a client that waits for `100 Continue` must not be told to send a
            # body that is refused (waitress would then read it up to the limit).
            self.expect_continue = False
            if isinstance(self.error, RequestEntityTooLarge) and self.refused is not None:
                log.info("refused an upload's body before reading it: %d %s",
                         self.refused.status, self.refused.code)
                self.error = AppRefusal(self.refused)
            # An error ends the connection: what else this read holds (pipelined uploads, each
            # a look-up in the I/O thread) is dropped unparsed.
            return len(data)
        return consumed

    def close(self) -> None:
        super().close()
        self.release()

    def release(self) -> None:
        """Give the upload's slot back (the request ended, or its client left)."""
        if self.ticket is not None:
            self.slots.give_back(self.ticket)


class UploadChannel(HTTPChannel):
    """A connection whose client may leave in the middle of an upload's body, or (a defence:
    a gated body is larger than a read, so it is never queued behind another request) with
    requests still queued: requests never served give their slots back here."""

    def handle_close(self) -> None:
        self._release_unserved()
        super().handle_close()

    def service(self) -> None:
        super().service()
        if not self.connected:  # waitress leaves the rest of a gone client's queue unserved
            self._release_unserved()

    def _release_unserved(self) -> None:
        with self.requests_lock:  # type: ignore[attr-defined]  # the stubs omit it
            unserved = [self.request, *self.requests]
        for request in unserved:
            if isinstance(request, UploadParser):
                request.release()


def make_channel_class(app: App, server_adj: Any) -> type[HTTPChannel]:
    """The channel class (waitress's extension point) for a server of app."""
    parser = type("ServerUploadParser", (UploadParser,), {
        "gate": staticmethod(app.admit_upload), "upload_adj": server_adj,
        "slots": UploadSlots(app.config.max_uploads_per_project)})
    return type("ServerUploadChannel", (UploadChannel,), {"parser_class": parser})
