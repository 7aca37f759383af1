"""Global switches (NATTEN 0.21's context flags), with the intended semantics of its "disable"
functions (NATTEN's ``disable_flex_compile`` re-enables compile; ours disables it)."""

import logging
import sys

from .types import MemoryUsagePreference

logger = logging.getLogger("nattn")

_state = {
    "kv_parallelism": True,
    "memory_preference": MemoryUsagePreference.Default,
    "deterministic": False,
    "flex_compile": False,
    "flex_compile_backprop": False,
}


def _torch_deterministic():
    # torch's flag can only be on if torch was imported: no import attempt here (without torch
    # installed, a failing import searched the file system on every call, ~60 us).
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return bool(torch.are_deterministic_algorithms_enabled())


# ---- KV parallelism (CUDA backward) ---------------------------------------------------------
def use_kv_parallelism_in_fused_na(mode: bool = True):
    if not isinstance(mode, bool):
        raise ValueError(f"use_kv_parallelism_in_fused_na: mode must be a bool (got {mode!r})")
    if mode and _state["deterministic"]:
        raise RuntimeError(
            "use_kv_parallelism_in_fused_na(True) conflicts with nattn.use_deterministic_algorithms(True); "
            "turn deterministic algorithms off first"
        )
    if mode and _torch_deterministic():
        logger.warning(
            "KV parallelism enabled while torch deterministic algorithms are on: backward passes stay "
            "deterministic (one KV split) until torch.use_deterministic_algorithms(False)"
        )
    _state["kv_parallelism"] = mode


def is_kv_parallelism_in_fused_na_enabled() -> bool:
    return _state["kv_parallelism"]


# ---- memory preference -----------------------------------------------------------------------
_MEMORY_NAMES = {
    "default": MemoryUsagePreference.Default,
    "strict": MemoryUsagePreference.Strict,
    "unrestricted": MemoryUsagePreference.Unrestricted,
}


def set_memory_usage_preference(pref: str = "default"):
    if not isinstance(pref, str) or pref not in _MEMORY_NAMES:
        raise ValueError(
            f"set_memory_usage_preference: pref={pref!r} is not valid; allowed: 'default', 'strict', 'unrestricted'"
        )
    _state["memory_preference"] = _MEMORY_NAMES[pref]


def get_memory_usage_preference() -> MemoryUsagePreference:
    return _state["memory_preference"]


def is_memory_usage_default() -> bool:
    return _state["memory_preference"] == MemoryUsagePreference.Default


def is_memory_usage_strict() -> bool:
    return _state["memory_preference"] == MemoryUsagePreference.Strict


def is_memory_usage_unrestricted() -> bool:
    return _state["memory_preference"] == MemoryUsagePreference.Unrestricted


# ---- determinism -----------------------------------------------------------------------------
def use_deterministic_algorithms(mode: bool = True):
    """nattn's own switch. Unlike NATTEN's (which only warns), it takes effect: backward passes
    run deterministically while it is on. torch.use_deterministic_algorithms(True) does the same."""
    if not isinstance(mode, bool):
        raise ValueError(f"use_deterministic_algorithms: mode must be a bool (got {mode!r})")
    _state["deterministic"] = mode


def are_deterministic_algorithms_enabled() -> bool:
    return _state["deterministic"]


def deterministic_now() -> bool:
    """What a forward pass records for its backward: deterministic unless KV parallelism is on and
    neither nattn's nor torch's deterministic switch is set."""
    return _state["deterministic"] or not _state["kv_parallelism"] or _torch_deterministic()


# ---- flex compile guards ---------------------------------------------------------------------
def allow_flex_compile(mode: bool = True, backprop: bool = False):
    if not isinstance(mode, bool) or not isinstance(backprop, bool):
        raise ValueError(f"allow_flex_compile: mode and backprop must be bools (got {mode!r}, {backprop!r})")
    _state["flex_compile"] = mode
    _state["flex_compile_backprop"] = mode and backprop


def allow_flex_compile_backprop(mode: bool = True):
    if not isinstance(mode, bool):
        raise ValueError(f"allow_flex_compile_backprop: mode must be a bool (got {mode!r})")
    if mode:
        _state["flex_compile"] = True
    _state["flex_compile_backprop"] = mode


def disable_flex_compile():
    _state["flex_compile"] = False
    _state["flex_compile_backprop"] = False


def disable_flex_compile_backprop():
    _state["flex_compile_backprop"] = False


def is_flex_compile_allowed() -> bool:
    return _state["flex_compile"]


def is_flex_compile_backprop_allowed() -> bool:
    return _state["flex_compile_backprop"]
