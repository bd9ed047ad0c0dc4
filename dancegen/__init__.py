"""dancegen: human dance video generation toolkit.

Importing this package is cheap on purpose: torch, diffusers and librosa are imported inside the
functions that need them, so `import dancegen` and `dancegen --help` stay fast.
"""

__version__ = "0.1.0"

from dancegen.errors import DanceGenError, InputError, MissingWeightsError  # noqa: E402

__all__ = ["DanceGenError", "InputError", "MissingWeightsError", "__version__"]
