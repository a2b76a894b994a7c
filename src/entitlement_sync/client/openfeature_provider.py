"""An OpenFeature provider over `AccessClient`: a lookup key is a boolean flag, the customer the targeting key.

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from entitlement_sync.client.openfeature_provider import EntitlementProvider

    api.set_provider(EntitlementProvider(AccessClient(url, token)))
    api.get_client().get_boolean_value("api_access", False, EvaluationContext(targeting_key="cus_123"))

Reasons: TARGETING_MATCH (the copy's answer), STALE (the copy's answer while the service is unreachable),
DEFAULT (a customer never seen while the copy is not current: the client's per-feature default). Before the
first copy is loaded, a key without a client default is PROVIDER_NOT_READY (the caller's default wins). Every
answer carries `stale_seconds` in its flag metadata. Other flag types are not access: TYPE_MISMATCH.
Needs the `openfeature-sdk` package (`pip install "entitlement-sync[client]"`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from . import AccessClient

T = TypeVar("T")


class EntitlementProvider(AbstractProvider):
    def __init__(self, client: AccessClient, *, ready_timeout: float = 5.0, owns_client: bool = True) -> None:
        super().__init__()
        self._client = client
        self._ready_timeout = ready_timeout
        self._owns_client = owns_client

    def get_metadata(self) -> Metadata:
        return Metadata(name="entitlement-sync")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        # Give the first snapshot a moment; evaluations before it answer the defaults (PROVIDER_NOT_READY).
        self._client.wait_until_ready(self._ready_timeout)

    def shutdown(self) -> None:
        if self._owns_client:
            self._client.close()

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        customer = evaluation_context.targeting_key if evaluation_context is not None else None
        if not customer:
            return _error(default_value, ErrorCode.TARGETING_KEY_MISSING, "the customer id is the targeting key")
        answer = self._client.check(customer, flag_key)
        metadata = {"stale_seconds": round(answer.stale, 3)}
        if not self._client.ready and not self._client.has_default(flag_key):
            # No copy yet and no default of the client's for this key: the caller's default (the SDK's rule).
            return _error(default_value, ErrorCode.PROVIDER_NOT_READY, "no copy of access loaded yet")
        if answer.source == "default":
            reason = Reason.DEFAULT
        else:
            reason = Reason.STALE if self._client.unreachable else Reason.TARGETING_MATCH
        return FlagResolutionDetails(
            answer.granted, reason=reason, variant="on" if answer.granted else "off", flag_metadata=metadata
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return _not_boolean(default_value)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return _not_boolean(default_value)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        return _not_boolean(default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _not_boolean(default_value)


def _not_boolean(default_value: T) -> FlagResolutionDetails[T]:
    return _error(default_value, ErrorCode.TYPE_MISMATCH, "entitlement-sync flags are booleans (access)")


def _error(default_value: T, code: ErrorCode, message: str) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(default_value, error_code=code, error_message=message, reason=Reason.ERROR)


__all__ = ["EntitlementProvider"]
