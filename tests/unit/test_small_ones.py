"""The small ones that bite: secrets in reprs, the Stripe-Signature header read as Stripe reads it, bodies
the database cannot store, and the Docker image's user."""

import json
import re
import time
from pathlib import Path

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.errors import InvalidWebhook
from entitlement_sync.events import parse_event
from entitlement_sync.settings import Settings
from entitlement_sync.stripe_signature import WebhookVerifier, signed_timestamp
from entitlement_sync.tasks import build_stub_broker
from entitlement_sync.testing import summary_event

SECRETS = {
    "stripe_api_key": "sk_live_51KeyThatMustNotLeak",
    "webhook_secrets": ("whsec_FirstSecretValue", "whsec_SecondSecretValue"),
    "database_url": "postgresql+psycopg://app:Db-Pa55word@db.internal:5432/entitlements?password=QueryPass",
    "redis_url": "redis://:Redis-Pa55word@redis.internal:6379/0",
    "access_api_tokens": ("read-token-NotToLeak",),
    "ops_console_token": "console-token-NotToLeak",
    "ops_console_secret_key": "console-cookie-key-NotToLeak",
}
LEAKS = ["51KeyThatMustNotLeak", "FirstSecretValue", "SecondSecretValue", "Db-Pa55word", "QueryPass"]
LEAKS += ["Redis-Pa55word", "read-token-NotToLeak", "console-token-NotToLeak", "console-cookie-key-NotToLeak"]


def test_no_secret_appears_in_the_repr_or_str_of_settings_or_the_container(tmp_path):
    settings = Settings(**SECRETS)  # type: ignore[arg-type]
    container = bootstrap(
        Settings(**{**SECRETS, "database_url": f"sqlite:///{tmp_path}/x.db"}), broker=build_stub_broker()
    )
    shown = " ".join([repr(settings), str(settings), repr(container), str(container), f"{settings}"])
    for secret in LEAKS:
        assert secret not in shown
    assert "sk_live_<redacted>" in shown and "db.internal:5432/entitlements" in shown  # still useful
    assert "redis.internal:6379" in shown
    container.close()


# -- Stripe-Signature, as stripe-python reads it ------------------------------------------------------------

header_parts = st.lists(
    st.sampled_from(["t", "v1", "v0", " t", "t ", "T", "", "x"]).flatmap(
        lambda key: st.tuples(
            st.just(key), st.lists(st.sampled_from(["", "12", "1700000000", "ab", "=", " 7"]), max_size=3)
        )
    ),
    max_size=5,
)


@given(header_parts)
def test_the_timestamp_is_read_exactly_as_stripe_reads_it(parts):
    header = ",".join(key + "".join(f"={value}" if value != "=" else "==" for value in values) for key, values in parts)
    try:
        expected, _ = stripe.WebhookSignature._get_timestamp_and_signatures(header, "v1")
    except Exception:
        return  # Stripe refuses the header, so verification does and the timestamp is never read
    assert signed_timestamp(header) == expected


def stripe_signed(body: bytes, secret: str, header_for):
    now = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{now}.{body.decode()}", secret)
    return header_for(now, signature)


@pytest.mark.parametrize(
    "header_for",
    [
        pytest.param(lambda t, sig: f"t={t}=extra,v1={sig}", id="t with a second ="),
        pytest.param(lambda t, sig: f" t=99999999999,t={t},v1={sig}", id="a t key with a space is not t"),
        pytest.param(lambda t, sig: f"v1={sig},t={t},t=1", id="the first t counts"),
    ],
)
def test_headers_stripe_accepts_are_accepted_and_answered_not_crashed(header_for):
    body = json.dumps(summary_event("cus_1", [])).encode()
    header = stripe_signed(body, "whsec_1", header_for)
    stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_1", tolerance=300)  # Stripe says yes
    WebhookVerifier(("whsec_1",)).verify(body, header)  # and so do we, without a ValueError


# -- signed bodies the database cannot store: 400, never 500 -------------------------------------------------


def with_created(created):
    return json.dumps({**summary_event("cus_1", []), "created": created})


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("[" * 100_000 + "]" * 100_000, id="nested past the recursion limit"),
        pytest.param(json.dumps({**summary_event("cus_1", []), "deep": json.loads("[" * 500 + "]" * 500)}), id="deep"),
        pytest.param(with_created("NaN").replace('"NaN"', "NaN"), id="NaN"),
        pytest.param(with_created(1).replace('"livemode"', '"x": Infinity, "livemode"'), id="Infinity"),
        pytest.param(with_created(1).replace('"livemode"', '"x": 1e400, "livemode"'), id="1e400"),
        pytest.param(with_created(10**30), id="created beyond BIGINT"),
        pytest.param(with_created(-5), id="negative created"),
        pytest.param(with_created(1).replace('"livemode"', '"x": ' + "9" * 5000 + ', "livemode"'), id="5000 digits"),
        pytest.param(json.dumps({**summary_event("cus_1", []), "id": "evt_\u0000"}), id="NUL in the id"),
        pytest.param(json.dumps({**summary_event("cus_1", []), "type": "a\ud800b"}), id="lone surrogate in the type"),
        pytest.param(json.dumps({**summary_event("cus_1", []), "note": "\udc00"}), id="lone surrogate in the payload"),
    ],
)
def test_an_out_of_range_or_absurdly_nested_body_is_invalid_not_an_error(body):
    with pytest.raises(InvalidWebhook):
        parse_event(body.encode("utf-8", "surrogatepass"))


def test_a_body_nested_exactly_as_deep_as_allowed_is_an_event_one_level_more_is_not():
    from entitlement_sync.events import MAX_DEPTH

    def nested(levels):  # the event is level 1 and its "deep" list level 2
        return json.dumps({**summary_event("cus_1", []), "deep": json.loads("[" * levels + "]" * levels)})

    assert parse_event(nested(MAX_DEPTH - 1).encode()).customer_id == "cus_1"
    with pytest.raises(InvalidWebhook, match="nested more than"):
        parse_event(nested(MAX_DEPTH).encode())


def test_real_shaped_events_pass_the_depth_check_whether_or_not_it_walks_them():
    from entitlement_sync.events import MAX_DEPTH
    from entitlement_sync.testing import active_entitlement
    from entitlement_sync.testing.shapes import event, subscription
    from tests.real_shapes import PRICE, subscription_event

    one_item = json.dumps(subscription_event("customer.subscription.updated", "cus_1", event_id="evt_1", created=1))
    three_items = json.dumps(
        event("customer.subscription.updated", subscription("sub_2", "cus_2", prices=[PRICE] * 3), created=1)
    )
    summary = json.dumps(summary_event("cus_3", [active_entitlement("feat_api", "api_access")]))
    brackets = [body.count("{") + body.count("[") for body in (one_item, three_items, summary)]
    assert brackets[1] > MAX_DEPTH >= brackets[0]  # the three-item one is walked, the others skip the walk

    assert [parse_event(body.encode()).customer_id for body in (one_item, three_items, summary)] == [
        "cus_1",
        "cus_2",
        "cus_3",
    ]


def test_a_customer_id_the_database_cannot_hold_is_no_customer():
    payload = summary_event("cus_1", [])
    payload["data"]["object"]["customer"] = "cus_\u0000"
    assert parse_event(json.dumps(payload)).customer_id is None


def test_the_docker_image_runs_as_an_unprivileged_user():
    dockerfile = (Path(__file__).parents[2] / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, line in enumerate(dockerfile.splitlines()) if line.startswith("USER"))
    commands = [i for i, line in enumerate(dockerfile.splitlines()) if line.startswith(("RUN", "CMD", "ENTRYPOINT"))]
    assert all(i < last_user for i in commands if dockerfile.splitlines()[i].startswith("RUN"))
    assert "--internal-port" in dockerfile.splitlines()[max(commands)]


def test_a_surrogate_pair_escaped_in_a_body_is_one_character_and_the_event_is_taken():
    body = json.dumps({**summary_event("cus_1", []), "note": "\U0001f600 and a \\ud800 that is only text"})
    assert "\\ud83d\\ude00" in body
    assert parse_event(body.encode()).payload["note"] == "\U0001f600 and a \\ud800 that is only text"
