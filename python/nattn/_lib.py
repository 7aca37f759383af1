"""Loads the compiled extension ``nattn._C``; ``HAS_LIBNATTEN`` says whether it imported."""

# When PyTorch is installed, it is imported before the extension. On the GPU machine (PyTorch 2.11
# wheel, Ubuntu 24.04, CUDA 13 toolkit) loading nattn._C first made the later `import torch`
# crash inside torch's operator registry (seen with `python -m nattn.profiler`); with torch loaded
# first, as in every test run there, everything works. The cause (which shared-library symbols the
# two resolve to) is not established yet.
try:
    import torch  # noqa: F401
except ImportError:
    pass

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
