"""Where mint keeps its data: converted base models, checkpoints and metadata."""

from __future__ import annotations

import os
from pathlib import Path


def mint_home() -> Path:
    """The data directory: ``$MINT_HOME`` if set, else ``$XDG_CACHE_HOME/mint`` or ``~/.cache/mint``."""
    env = os.environ.get("MINT_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        path = Path(cache) / "mint"
    path.mkdir(parents=True, exist_ok=True)
    return path
