"""gunicorn's access log leaves out the webhooks the receiver logs itself and the reads the read API counts, and
keeps every other request."""

from entitlement_sync.gunicorn_hooks import AccessLog, counted_by_the_read_api, logged_by_the_receiver


def test_webhooks_answered_200_or_400_have_no_access_line_beside_their_structured_one():
    assert logged_by_the_receiver("POST", "/webhooks/stripe", 200)
    assert logged_by_the_receiver("POST", "/webhooks/stripe", 400)


def test_other_answers_and_other_requests_keep_their_access_line():
    assert not logged_by_the_receiver("POST", "/webhooks/stripe", 503)
    assert not logged_by_the_receiver("POST", "/webhooks/stripe", 413)
    assert not logged_by_the_receiver("GET", "/v1/customers/cus_1/entitlements", 200)
    assert not logged_by_the_receiver("GET", "/webhooks/stripe", 405)


def test_reads_answered_200_have_no_access_line_their_metric_counts_them():
    assert counted_by_the_read_api("GET", "/v1/customers/cus_1/entitlements", 200)
    assert counted_by_the_read_api("GET", "/v1/customers/cus_1/entitlements/api_access", 200)


def test_refused_or_failed_reads_and_other_requests_keep_their_access_line():
    assert not counted_by_the_read_api("GET", "/v1/customers/cus_1/entitlements", 401)
    assert not counted_by_the_read_api("GET", "/v1/customers/cus_1/entitlements", 503)
    assert not counted_by_the_read_api("GET", "/v1/access-changes", 200)
    assert not counted_by_the_read_api("GET", "/metrics", 200)
    assert not counted_by_the_read_api("POST", "/v1/customers/cus_1/entitlements", 200)


def test_serve_loads_the_access_log_from_its_gunicorn_config():
    from entitlement_sync import gunicorn_hooks

    assert gunicorn_hooks.logger_class is AccessLog
