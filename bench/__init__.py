"""The benchmark suite of issue 9: each part beside a bare reference, in the same run, alternating reps.

    python -m bench run [receiver|worker|freshness|burst|coalescing|reconcile|reads|all] [--quick]
    python -m bench report            # bench/results/*.json -> docs/benchmarks.md and docs/benchmarks/*.png

Needs PostgreSQL and Redis on loopback (BENCH_DATABASE_URL, BENCH_REDIS_URL; the database's tables are
emptied) and `wrk` (Debian package `wrk`) for the HTTP parts. See docs/benchmarks.md.
"""
