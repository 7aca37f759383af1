"""Loads the compiled extension ``nattn._C``; ``HAS_LIBNATTEN`` says whether it imported."""

try:
    from . import _C as lib  # noqa: F401

    HAS_LIBNATTEN = True
    _IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - only without a build
    lib = None
    HAS_LIBNATTEN = False
    _IMPORT_ERROR = e


def require_lib():
    """Returns the extension module, or raises ImportError saying why it is missing."""
    if lib is None:
        raise ImportError(
            "nattn's compiled extension (nattn._C) could not be imported "
            f"({_IMPORT_ERROR}); install nattn with `pip install .` from the repository root"
        )
    return lib
