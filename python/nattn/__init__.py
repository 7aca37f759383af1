"""nattn: neighborhood attention with NATTEN 0.21's Python API on a framework-free C++ core.

Works on torch tensors (autograd, torch.compile) and NumPy arrays (CPU backends). PyTorch is
optional: without it the modules are unavailable and the ops take NumPy arrays."""

from ._lib import HAS_LIBNATTEN
from .configs import (
    choose_backend,
    get_bwd_configs,
    get_bwd_configs_for_cutlass_blackwell_fmha,
    get_bwd_configs_for_cutlass_blackwell_fna,
    get_bwd_configs_for_cutlass_fmha,
    get_bwd_configs_for_cutlass_fna,
    get_bwd_configs_for_cutlass_hopper_fmha,
    get_bwd_configs_for_cutlass_hopper_fna,
    get_configs,
    get_configs_for_cutlass_blackwell_fmha,
    get_configs_for_cutlass_blackwell_fna,
    get_configs_for_cutlass_fmha,
    get_configs_for_cutlass_fna,
    get_configs_for_cutlass_hopper_fmha,
    get_configs_for_cutlass_hopper_fna,
    get_configs_for_flex_fmha,
    get_configs_for_flex_fna,
    list_backends,
)
from .context import (
    allow_flex_compile,
    allow_flex_compile_backprop,
    are_deterministic_algorithms_enabled,
    disable_flex_compile,
    disable_flex_compile_backprop,
    get_memory_usage_preference,
    is_flex_compile_allowed,
    is_flex_compile_backprop_allowed,
    is_kv_parallelism_in_fused_na_enabled,
    is_memory_usage_default,
    is_memory_usage_strict,
    is_memory_usage_unrestricted,
    set_memory_usage_preference,
    use_deterministic_algorithms,
    use_kv_parallelism_in_fused_na,
)
from .functional import (
    attention,
    generate_varlen_parameters,
    merge_attentions,
    na1d,
    na2d,
    na3d,
    neighborhood_attention_generic,
)
from .types import KernelSchedule

__version__ = "0.1.0"
if HAS_LIBNATTEN:
    from ._lib import lib as _ext

    __version__ = _ext.__version__

_MODULES = ("NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D")


def __getattr__(name):
    # The modules need torch; import them lazily so that `import nattn` works without it.
    if name in _MODULES:
        from . import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'nattn' has no attribute {name!r}")


def _register_torch_ops():
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    if HAS_LIBNATTEN:
        from . import _torch_ops  # noqa: F401  (registers nattn:: ops with torch.library)


_register_torch_ops()

__all__ = [
    "na1d", "na2d", "na3d", "attention", "merge_attentions", "generate_varlen_parameters",
    "NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D",
    "HAS_LIBNATTEN", "__version__", "KernelSchedule", "list_backends", "choose_backend", "get_configs",
    "get_bwd_configs",
    "use_kv_parallelism_in_fused_na", "is_kv_parallelism_in_fused_na_enabled", "set_memory_usage_preference",
    "get_memory_usage_preference", "is_memory_usage_default", "is_memory_usage_strict",
    "is_memory_usage_unrestricted", "use_deterministic_algorithms", "are_deterministic_algorithms_enabled",
    "allow_flex_compile", "allow_flex_compile_backprop", "disable_flex_compile", "disable_flex_compile_backprop",
    "is_flex_compile_allowed", "is_flex_compile_backprop_allowed",
    "get_configs_for_cutlass_fmha", "get_bwd_configs_for_cutlass_fmha", "get_configs_for_cutlass_fna",
    "get_bwd_configs_for_cutlass_fna", "get_configs_for_cutlass_hopper_fmha",
    "get_bwd_configs_for_cutlass_hopper_fmha", "get_configs_for_cutlass_hopper_fna",
    "get_bwd_configs_for_cutlass_hopper_fna", "get_configs_for_cutlass_blackwell_fmha",
    "get_bwd_configs_for_cutlass_blackwell_fmha", "get_configs_for_cutlass_blackwell_fna",
    "get_bwd_configs_for_cutlass_blackwell_fna", "get_configs_for_flex_fmha", "get_configs_for_flex_fna",
]
