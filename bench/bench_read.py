"""How fast internal services read access: `AccessReader.has_access` and the HTTP read API.

python bench/bench_read.py                                   # SQLite file in a temp dir
python bench/bench_read.py postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, insert

from entitlement_sync import AccessReader
from entitlement_sync.db import create_db_engine, upgrade
from entitlement_sync.logs import configure_logging
from entitlement_sync.models import Base, CustomerSyncState, EffectiveAccess, Entitlement, utcnow

CUSTOMERS, FEATURES, READS = 10_000, 5, 20_000


def populate(url: str) -> None:
    upgrade(url)
    engine = create_db_engine(url)
    now = utcnow()
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
        connection.execute(
            insert(Entitlement),
            [
                {
                    "customer_id": f"cus_{c}",
                    "feature_id": f"feat_{f}",
                    "lookup_key": f"feature_{f}",
                    "entitlement_id": f"ent_{c}_{f}",
                    "granted_at": now,
                }
                for c in range(CUSTOMERS)
                for f in range(FEATURES)
            ],
        )
        connection.execute(  # what the policy makes of them: has_access reads this table
            insert(EffectiveAccess),
            [
                {
                    "customer_id": f"cus_{c}",
                    "lookup_key": f"feature_{f}",
                    "granted": True,
                    "reason": "stripe_entitlement",
                    "sources": [{"kind": "entitlement", "id": f"ent_{c}_{f}", "detail": f"feat_{f}"}],
                    "since": now,
                    "computed_at": now,
                }
                for c in range(CUSTOMERS)
                for f in range(FEATURES)
            ],
        )
        connection.execute(
            insert(CustomerSyncState),
            [{"customer_id": f"cus_{c}", "seq": 1, "applied_seq": 1, "synced_at": now} for c in range(CUSTOMERS)],
        )
    engine.dispose()


def measure(label: str, call, samples: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    timings = []
    for _ in range(samples):
        customer, feature = f"cus_{rng.randrange(CUSTOMERS)}", f"feature_{rng.randrange(FEATURES + 2)}"
        started = time.perf_counter()
        call(customer, feature)
        timings.append((time.perf_counter() - started) * 1e6)
    timings.sort()
    print(f"{label:<38} p50 {statistics.median(timings):8.1f} µs   p99 {timings[int(len(timings) * 0.99)]:8.1f} µs")


def main() -> None:
    configure_logging("WARNING")
    url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    populate(url)
    reader = AccessReader.connect(url)
    print(f"{CUSTOMERS} customers x {FEATURES} entitlements on {url.split(':')[0]}, {READS} random reads")
    measure("AccessReader.has_access", reader.has_access, READS)
    measure("AccessReader.entitlements_for", lambda c, _f: reader.entitlements_for(c), READS)
    measure("AccessReader.check", reader.check, READS)


if __name__ == "__main__":
    main()
