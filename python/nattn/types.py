"""Public enums (NATTEN 0.21's ``natten.types``)."""

from enum import Enum


class KernelSchedule(Enum):
    """Hopper forward kernel schedules (only ``hopper-*`` backends use them)."""

    NonPersistent = 0
    WarpSpecializedCooperative = 1
    WarpSpecializedPingpong = 2


class MemoryUsagePreference(Enum):
    Default = 0
    Strict = 1
    Unrestricted = 2


# Our core's names of the schedules.
SCHEDULE_TO_CORE = {
    KernelSchedule.NonPersistent: "non",
    KernelSchedule.WarpSpecializedCooperative: "coop",
    KernelSchedule.WarpSpecializedPingpong: "pp",
}
CORE_TO_SCHEDULE = {v: k for k, v in SCHEDULE_TO_CORE.items()}


def parse_kernel_schedule(value):
    """None, a KernelSchedule or one of "non", "coop", "pp" -> the core's name ("" for None)."""
    if value is None:
        return ""
    if isinstance(value, KernelSchedule):
        return SCHEDULE_TO_CORE[value]
    if isinstance(value, str) and value in CORE_TO_SCHEDULE:
        return value
    raise ValueError(
        f"kernel_schedule={value!r} is not valid; allowed: None, a nattn.types.KernelSchedule, "
        "or one of 'non', 'coop', 'pp'"
    )
