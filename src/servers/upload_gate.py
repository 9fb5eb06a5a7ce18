"""waitress's parser for image uploads: a body may pass 1 MiB only once the app has admitted
its request from the headers alone (src/app.py `admit_upload`, the one admission an upload
gets, src/services/images/files.py `Intake.admit`).

waitress reads a whole request, a large body into a temporary file, before the app sees it. So
the upload route's larger limit is given per request, after the headers: a valid token, an image
the caller may upload to, what IAAS_IMAGE_MAX_BYTES and images_gb leave (less what the
project's other admitted uploads reserve), and a slot (per image, per project, and the
server's share). The admission travels with the request to the app, which takes it as it is,
and is released when the request ends or its client leaves. Anything else keeps the 1 MiB
limit, and a larger body is answered, with the app's own error, as soon as that is known (from
Content-Length, or once 1 MiB of a chunked body came); a refused upload is answered at once.
"""
from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from waitress.parser import HTTPRequestParser
from waitress.task import WSGITask
from waitress.utilities import Error, RequestEntityTooLarge

from src import errors
from src.api.body_stream import ADMISSION_KEY
from src.api.failures import refusal
from src.servers.guards import Limits, RateWindow
from src.services.images.admissions import Admission

log = logging.getLogger("iaas.serve")
# (Authorization, method, path, announced length or None) -> the admission, or None: no upload
Gate = Callable[[str | None, str, str, int | None], Admission | None]


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
    """waitress's request parser, with the upload route's body limit given per request and
    the time its headers and body take kept (src/servers/prod.py enforces them)."""

    gate: Gate  # the three are set by the subclass make_parser_class builds
    upload_adj: Any  # the server's settings, to copy with an upload's limit
    limits: Limits
    refused: errors.ApiError | None = None  # the answer to a body over this request's limit
    admission: Admission | None = None
    window: RateWindow | None = None  # an admitted body's pace

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.began = time.monotonic()  # the request's first byte

    def parse_header(self, header_plus: bytes) -> None:
        # waitress parses a request's headers again when it read them whole but answered
        # `100 Continue` to a request without a body: nothing of the first parse may stay.
        self.release()
        self.admission, self.window, self.refused = None, None, None
        self.adj = self.upload_adj
        super().parse_header(header_plus)
        # A body within the server's limit needs no admission here (the app admits it): the
        # gate runs in waitress's one I/O thread, so only a request that would be read past
        # that limit may cost a look-up.
        if self.chunked or self.content_length >= self.upload_adj.max_request_body_size:
            self._admit()

    def _admit(self) -> None:
        """Raise this request's body limit if the app admits it as an upload; answer a
        refused one at once, before its body (the app would refuse it the same way)."""
        # Read by name: the stubs type command and path as bytes, which waitress has decoded.
        method, path = str(getattr(self, "command", "")), str(getattr(self, "path", ""))
        try:
            admission = self.gate(self.headers.get("AUTHORIZATION"), method, path,
                                  None if self.chunked else self.content_length)
        except errors.ApiError as exc:
            self._refuse(exc)
            return
        except Exception:  # the database, say: it must never end the I/O loop
            log.exception("could not check an upload to %s before its body", path)
            self._refuse(errors.ApiError())
            return
        if admission is None:  # not an upload: the 1 MiB limit stays
            return
        self.admission, self.refused = admission, admission.beyond
        self.window = RateWindow(self.limits.upload_min_rate, self.limits.request_timeout_s,
                                 time.monotonic())
        self.adj = copy.copy(self.upload_adj)
        self.adj.max_request_body_size = admission.limit + 1  # waitress refuses >=

    def _refuse(self, error: errors.ApiError) -> None:
        """End this request with error before its body (and the connection after it)."""
        log.info("refused an upload before its body: %d %s", error.status, error.code)
        self.refused = error  # waitress may still set its own 413 on this request: replaced
        self.error = AppRefusal(error)
        self.completed = True

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
                self.error = AppRefusal(self.refused)
            # An error ends the connection: what else this read holds (pipelined uploads, each
            # a look-up in the I/O thread) is dropped unparsed.
            return len(data)
        return consumed

    def close(self) -> None:
        super().close()
        self.release()

    def release(self) -> None:
        """Give the upload's admission back (the request ended, or its client left)."""
        if self.admission is not None:
            self.admission.release()


class AdmittedTask(WSGITask):
    """waitress's task for a request: an upload carries its admission to the app."""

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        admission = getattr(self.request, "admission", None)  # the stubs type it an Error
        if admission is not None:
            environ[ADMISSION_KEY] = admission
        return environ


def make_parser_class(gate: Gate, server_adj: Any, limits: Limits) -> type[UploadParser]:
    """The parser class of a server whose app admits uploads through gate."""
    return type("ServerUploadParser", (UploadParser,), {
        "gate": staticmethod(gate), "upload_adj": server_adj, "limits": limits})
