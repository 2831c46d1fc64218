"""User-facing errors: one line, naming the key or file, exit code 2, no traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, unknown method).

    The CLI prints ``str(error)`` on one line per problem and exits with code 2.
    ``where`` names the offending key path (``space.lora.rank``) or file.
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.where = where
        self.hint = hint
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text
