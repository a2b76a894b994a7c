"""`entitlement-sync doctor`: can this deployment do its job? See `examine.Doctor`."""

from .examine import Doctor
from .findings import DoctorReport, Finding, Level

__all__ = ["Doctor", "DoctorReport", "Finding", "Level"]
