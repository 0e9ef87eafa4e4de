"""Loads the compiled extension mint._C, which registers the torch.ops.mint.* operators."""

from __future__ import annotations

import torch


def load_extension():
    """Import mint._C, explaining the usual causes when it cannot be loaded."""
    try:
        from mint import _C  # noqa: F401
    except ImportError as exc:
        try:
            from mint import _build_info

            built = _build_info.TORCH_VERSION
        except ImportError:
            built = "unknown"
        hint = ""
        if built not in ("unknown", torch.__version__):
            hint = (
                f" mint was built against torch {built} but torch {torch.__version__} is installed;"
                " rebuild it with `pip install --no-build-isolation --force-reinstall --no-deps .`"
            )
        elif "undefined symbol" in str(exc):
            hint = " The extension does not match the installed torch; rebuild mint against it."
        raise ImportError(f"mint could not load its compiled kernels (mint._C): {exc}.{hint}") from exc
    return torch.ops.mint
