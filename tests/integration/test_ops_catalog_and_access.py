"""`entitlement-sync features …` and `access show`: the local catalog; a customer's access and its story."""

from entitlement_sync.events import SUMMARY_UPDATED, event_from_payload
from tests.conftest import settle


def test_features_sync_keeps_the_catalog_and_which_product_grants_what(cli, container, fake_stripe):
    api = fake_stripe.create_feature("api_access", "Api Access", feature_id="feat_api")
    old_reports = fake_stripe.create_feature("reports", "Reports", feature_id="feat_old")
    pro = fake_stripe.create_product([api, old_reports], product_id="prod_pro")
    fake_stripe.archive_feature(old_reports)  # archived, yet still granted by the product it is attached to
    reports = fake_stripe.create_feature("reports", "Reports", feature_id="feat_reports")  # the key, reused
    team = fake_stripe.create_product([reports], product_id="prod_team")
    fake_stripe.subscribe("cus_1", [pro])
    created = fake_stripe.events.of_type("customer.subscription.created")[0]
    container.receiver.accept_event(event_from_payload(created))
    container.syncer.process_event(created["id"])  # the subscription mirror now names prod_pro

    dry = cli.json("features", "sync", "--product", team, "--dry-run")
    assert (dry["features"], dry["new_features"], dry["links_added"]) == (3, 3, 3)
    assert cli.json("features", "list")["features"] == []

    report = cli.json("features", "sync", "--product", team)
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

    fake_stripe.detach_feature(pro, old_reports)  # we changed a product's features
    again = cli.json("features", "sync")
    assert (again["links_added"], again["links_removed"], again["new_features"]) == (0, 1, 0)
    table = cli("features", "list")
    assert table.exit_code == 0 and "archived" in table.stdout

    fake_stripe.delete_product(team)  # Stripe now answers 404 for it
    assert cli.json("features", "sync")["links_removed"] == 1
    assert {item["id"]: item["products"] for item in cli.json("features", "list")["features"]}["feat_reports"] == []


def test_access_show_lists_access_since_when_and_the_event_behind_each_change(cli, container, worker, fake_stripe):
    api = fake_stripe.create_feature("api_access", "Api Access", feature_id="feat_api")
    assert cli("features", "sync").exit_code == 0
    reports = fake_stripe.create_feature("reports", "Reports", feature_id="feat_reports")
    basic, pro = fake_stripe.create_product([api]), fake_stripe.create_product([api, reports])
    subscription = fake_stripe.subscribe("cus_1", [pro])
    granting = fake_stripe.events.of_type(SUMMARY_UPDATED)[-1]
    container.receiver.accept_event(event_from_payload(granting))
    settle(container)
    fake_stripe.change_products(subscription, [basic])  # a downgrade, seen by an operator's sync
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
