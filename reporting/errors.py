"""One error hierarchy. A limit breach is data, not an exception."""

from __future__ import annotations


class LevtrackError(Exception):
    """Base of every error the job raises on purpose; the CLI maps it to an exit code."""

    exit_code = 1


class ConfigError(LevtrackError):
    """A setting is missing or out of range."""

    exit_code = 2


class InputError(LevtrackError):
    """A drop or reference file cannot be read as the contract says.

    The message names the file, the row(s) and the rule, and what to do.
    """

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, rows: list[int] | None = None,
                 rule: str | None = None):
        super().__init__(message)
        self.file = file
        self.rows = rows or []
        self.rule = rule


class ValidationFailed(LevtrackError):
    """A critical expectation failed: nothing is computed or published."""

    exit_code = 4

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = failures or []


class ArchiveError(LevtrackError):
    """The archive is missing, altered or inconsistent with its manifests."""

    exit_code = 5


class RunLockedError(LevtrackError):
    """Another run holds the lock for this business date."""

    exit_code = 6


class RenderError(LevtrackError):
    """A report cannot be rendered: inconsistent inputs, or a forbidden resource."""

    exit_code = 7


class DropNotReady(LevtrackError):
    """The drop was not complete (every file plus `_READY`) by the deadline."""

    exit_code = 9


class NotifyError(LevtrackError):
    """A notice could not be delivered over SMTP or to the webhook.

    ``sent`` lists the channels that did go out before or despite the failure.
    """

    exit_code = 8

    def __init__(self, message: str, *, sent: list[str] | None = None):
        super().__init__(message)
        self.sent = list(sent or [])
