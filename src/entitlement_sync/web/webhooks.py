"""POST /webhooks/stripe: verify, store, answer. The view translates HTTP to the use case and back."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from ..errors import InvalidWebhook
from ..logs import get_logger
from ._container import container

MAX_BODY_BYTES = 1024 * 1024
log = get_logger(__name__)
webhooks = Blueprint("webhooks", __name__)


@webhooks.post("/webhooks/stripe")
def receive_stripe_webhook() -> ResponseReturnValue:
    # The signature covers the raw bytes: read them before anything parses the body.
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= MAX_BODY_BYTES:
        # A chunked body is cut off at the limit rather than refused: say 413, not "signature does not match".
        container().telemetry.webhook_answered("unknown", "rejected", "too_large", 0.0)
        abort(413, description=f"body over {MAX_BODY_BYTES} bytes")
    try:
        acceptance = container().receiver.accept_webhook(body, request.headers.get("Stripe-Signature"))
    except InvalidWebhook as error:
        log.info("webhook.rejected", reason=str(error), bytes=len(body))
        return jsonify(error=str(error)), 400
    answer = {"status": acceptance.status, "event": acceptance.event_id}
    if acceptance.reason:
        answer["reason"] = acceptance.reason
    return jsonify(answer), 200
