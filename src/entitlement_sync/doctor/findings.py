"""What `doctor` reports: one finding per check, with its level, what was seen and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"  # worth knowing; does not fail the doctor
    PROBLEM = "problem"
    SKIPPED = "skipped"  # could not be checked because of a problem found earlier


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str | None = None


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(finding.level is not Level.PROBLEM for finding in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.level is Level.PROBLEM]


KEY_FIX = "set STRIPE_API_KEY to the secret (sk_) or restricted (rk_) key of the account whose webhooks you receive"
WRONG_ACCOUNT_FIX = (
    "STRIPE_API_KEY must be the key of the account and mode (test/live) that sends the webhooks; meanwhile events "
    "fail and no access is revoked. After fixing it: `entitlement-sync events replay --failed`"
)
