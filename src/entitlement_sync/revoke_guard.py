"""The revoke guard of `sync all`: stop before applying when too many customers would lose every entitlement.

A wrong STRIPE_API_KEY, a Stripe incident answering empty lists, or a catalog mistake all look alike from
here: many customers at once losing everything. A real wave of cancellations does not look like that, so
past a share of the customers checked, the run stops and a person decides (`--yes`).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_SHARE = 0.2
# Judging a share on the first customer or two would stop on one ordinary cancellation: the fetches of the
# first customers are held (not applied) until this many have been checked, or all of them in a smaller run.
DEFAULT_MIN_SAMPLE = 20


@dataclass
class RevokeGuard:
    max_share: float = DEFAULT_MAX_SHARE
    min_sample: int = DEFAULT_MIN_SAMPLE
    enabled: bool = True  # `--yes`: count, but never stop
    seen: int = 0  # customers checked, errors included
    checked: int = 0  # customers whose fetch succeeded: the share's denominator
    losing_everything: int = 0  # customers holding something, to whom Stripe now grants nothing
    decided: bool = False  # enough seen to judge: held fetches may be applied
    stopped: bool = False
    stopped_at: int | None = None  # customers checked when the share was first exceeded

    def count(self, fetched: bool, loses_everything: bool, *, total: int) -> None:
        self.seen += 1
        self.checked += fetched
        self.losing_everything += loses_everything
        self.decided = not self.enabled or self.seen >= min(self.min_sample, total)
        if self.enabled and self.decided and self.share > self.max_share and self.stopped_at is None:
            self.stopped, self.stopped_at = True, self.checked

    @property
    def share(self) -> float:
        return self.losing_everything / self.checked if self.checked else 0.0

    def describe(self) -> str:
        return (
            f"{self.losing_everything} of {self.checked} customer(s) checked ({self.share:.0%}) would lose every "
            f"entitlement; the limit is {self.max_share:.0%} (--max-revoke-share)"
        )
