"""POST /webhooks/stripe: verify, store, answer. The view translates HTTP to the use case and back.

The busiest route of the service is answered in plain WSGI in front of the Flask app (`WebhookRoute`, which
`create_app` installs wherever the blueprint is): no request object, routing or app context per webhook,
only the bytes, the signature header and the answer. The blueprint declares the route (a GET is a 405) and
answers it the same way where the plain path is not installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from .. import fastjson
from ..bootstrap import Container
from ..errors import InvalidWebhook, StorageUnavailable
from ..logs import get_logger
from ._container import container

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_PATH = "/webhooks/stripe"
log = get_logger(__name__)
webhooks = Blueprint("webhooks", __name__)

Answer = tuple[int, dict[str, Any], dict[str, str]]  # status, JSON document, extra headers


def answer_webhook(found: Container, body: bytes, complete: bool, signature: str | None) -> Answer:
    """`complete`: False when a body of unstated length was cut off at MAX_BODY_BYTES."""
    if not complete:
        # A chunked body is cut off at the limit rather than refused: say 413, not "signature does not match".
        found.telemetry.webhook_answered("unknown", "rejected", "too_large", 0.0)
        return 413, {"error": f"body over {MAX_BODY_BYTES} bytes"}, {}
    try:
        acceptance = found.receiver.accept_webhook(body, signature)
    except InvalidWebhook as error:
        log.info("webhook.rejected", reason=str(error), bytes=len(body))
        return 400, {"error": str(error)}, {}
    except StorageUnavailable as error:
        # 503 makes Stripe deliver again later; nothing was acknowledged, so nothing is lost.
        log.warning("database.unavailable", error=str(error))
        return 503, {"error": "database unavailable, try again later"}, {"Retry-After": "30"}
    answer = {"status": str(acceptance.status), "event": acceptance.event_id}
    if acceptance.reason:
        answer["reason"] = acceptance.reason
    return 200, answer, {}


@webhooks.post(WEBHOOK_PATH)
def receive_stripe_webhook() -> ResponseReturnValue:
    # The signature covers the raw bytes: read them before anything parses the body.
    body = request.get_data(cache=False)
    complete = request.content_length is not None or len(body) < MAX_BODY_BYTES
    status, document, headers = answer_webhook(container(), body, complete, request.headers.get("Stripe-Signature"))
    return jsonify(document), status, headers


class WebhookRoute:
    """WSGI: POST /webhooks/stripe answered here, every other request passed to the app behind."""

    def __init__(self, app: WSGIApplication, found: Container) -> None:
        self._app = app
        self._container = found

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != WEBHOOK_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self._app(environ, start_response)
        try:
            body, complete = _read_body(environ)
            status, document, headers = answer_webhook(
                self._container, body, complete, environ.get("HTTP_STRIPE_SIGNATURE")
            )
        except HTTPException as error:  # a body too large, too slow or cut short
            status, document, headers = error.code or 400, {"error": error.description}, {}
        except Exception:
            log.exception("webhook.failed")
            status, document, headers = 500, {"error": "internal error"}, {}
        payload = fastjson.dumps(document)
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers.items()],
        )
        return [payload]


def _read_body(environ: WSGIEnvironment) -> tuple[bytes, bool]:
    """The raw body and whether it is whole, as Flask reads it under MAX_CONTENT_LENGTH."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH")
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length > MAX_BODY_BYTES:
            raise RequestEntityTooLarge(f"body over {MAX_BODY_BYTES} bytes")
        body: bytes = stream.read(length) if length > 0 else b""
        if len(body) < length:
            raise BadRequest("the client sent less than its Content-Length")
        return body, True
    if environ.get("wsgi.input_terminated"):  # chunked: read up to the limit
        body = stream.read(MAX_BODY_BYTES)
        return body, len(body) < MAX_BODY_BYTES
    return b"", True
