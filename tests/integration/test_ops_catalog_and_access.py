"""`entitlement-sync features …` and `access show`: the local catalog; a customer's access and its story."""

from entitlement_sync.events import event_from_payload
from entitlement_sync.testing import active_entitlement, event, subscription, summary_event
from entitlement_sync.testing.shapes import feature
from tests.conftest import settle


def product_feature(link_id, feature_object):
    return {
        "id": link_id,
        "object": "product_feature",
        "entitlement_feature": feature_object,
        "livemode": False,
    }


def test_features_sync_keeps_the_catalog_and_which_product_grants_what(cli, container, ops_stripe):
    api, old_reports = feature("feat_api", "api_access"), feature("feat_old", "reports", active=False)
    reports = feature("feat_reports", "reports")
    ops_stripe.features = [api, reports, old_reports]
    ops_stripe.product_features = {
        "prod_pro": [product_feature("prodft_1", api), product_feature("prodft_2", old_reports)],
        "prod_team": [product_feature("prodft_3", reports)],
    }
    payload = event("customer.subscription.created", subscription("sub_1", "cus_1", prices=[("price_1", "prod_pro")]))
    container.receiver.accept_event(event_from_payload(payload))
    container.syncer.process_event(payload["id"])  # the subscription mirror now names prod_pro

    dry = cli.json("features", "sync", "--product", "prod_team", "--dry-run")
    assert (dry["features"], dry["new_features"], dry["links_added"]) == (3, 3, 3)
    assert cli.json("features", "list")["features"] == []

    report = cli.json("features", "sync", "--product", "prod_team")
    assert (report["features"], report["archived"], report["products"], report["links_added"]) == (3, 1, 2, 3)
    listed = {item["id"]: item for item in cli.json("features", "list")["features"]}
    assert listed["feat_old"] == {
        "id": "feat_old",
        "lookup_key": "reports",
        "name": "Reports",
        "active": False,
        "products": ["prod_pro"],
    }
    assert listed["feat_reports"]["products"] == ["prod_team"]

    ops_stripe.product_features["prod_pro"] = [product_feature("prodft_1", api)]  # we changed a product's features
    again = cli.json("features", "sync")
    assert (again["links_added"], again["links_removed"], again["new_features"]) == (0, 1, 0)
    table = cli("features", "list")
    assert table.exit_code == 0 and "archived" in table.stdout

    del ops_stripe.product_features["prod_team"]  # the product was deleted: Stripe answers 404
    assert cli.json("features", "sync")["links_removed"] == 1
    assert {item["id"]: item["products"] for item in cli.json("features", "list")["features"]}["feat_reports"] == []


def test_access_show_lists_access_since_when_and_the_event_behind_each_change(
    cli, container, worker, fake_stripe, ops_stripe
):
    ops_stripe.features = [feature("feat_api", "api_access")]
    assert cli("features", "sync").exit_code == 0
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access"), ("feat_reports", "reports")])
    granting = summary_event("cus_1", [active_entitlement("feat_api", "api_access")])
    container.receiver.accept_event(event_from_payload(granting))
    settle(container)
    fake_stripe.set_entitlements("cus_1", [("feat_api", "api_access")])
    assert cli("sync", "customer", "cus_1").exit_code == 0

    shown = cli.json("access", "show", "cus_1", "--history")
    assert [(row["lookup_key"], row["name"]) for row in shown["entitlements"]] == [("api_access", "Api Access")]
    assert shown["synced_at"] is not None and shown["entitlements"][0]["granted_at"]
    history = [(row["change"], row["lookup_key"], row["event"]) for row in shown["history"]]
    assert history[0] == ("revoked", "reports", "ops:sync-customer")
    assert sorted(history[1:]) == [
        ("granted", "api_access", granting["id"]),
        ("granted", "reports", granting["id"]),
    ]

    assert "history" not in cli.json("access", "show", "cus_1")
    never = cli.json("access", "show", "cus_unknown")
    assert (never["synced_at"], never["entitlements"]) == (None, [])
    text = cli("access", "show", "cus_1", "--history")
    assert text.exit_code == 0 and granting["id"] in text.stdout
