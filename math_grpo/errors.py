"""The project's error types. Each message is the whole story: entry points print it as one line, exit 2.

They live here, apart from the code that raises them, so any module can raise one without importing
another module's job (and so nothing imports in a circle).
"""

from __future__ import annotations

from collections.abc import Sequence


class MathGRPOError(Exception):
    """An error whose message is the whole story: printed as one line, without a traceback."""


class ConfigError(MathGRPOError, ValueError):
    """One or more configuration problems; `str()` is a single line naming every field and its fix.

    A `ValueError` too, so a check raised in a dataclass `__post_init__` reads like any other bad value.
    """

    def __init__(self, problems: str | Sequence[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class ServerError(MathGRPOError):
    """The vLLM server is unreachable, too slow, or answered with an error (the message names the URL)."""


class WeightSyncError(MathGRPOError):
    """The server does not hold the trainer's weights (or the sync itself failed)."""
