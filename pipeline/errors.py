"""The exception tree; the class of an error decides whether to retry, fail the row, or stop the run.

    PipelineError
    ├── JobError                    bad job file or usage (exit 2), raised before any request
    │   └── InputError              unreadable input, unknown column, duplicate ids ...
    ├── RunAborted                  the run cannot go on (exit 3)
    └── RequestError                one request attempt failed; carries status, code, message
        ├── RetryableError          retry with backoff, then fail the row
        │   ├── RateLimited         429: slow the whole provider, honour Retry-After
        │   │   └── ConcurrencyLimited  429 naming parallel requests: lower the concurrency
        │   └── TransientError      5xx, 408/409, timeouts, resets, malformed responses
        │       └── ConnectError    could not reach the server: try the provider's backup URL
        ├── RowError                this request is bad (400, 413, 422...): fail the row, no retry
        │   └── TooLargeError       bigger than the provider's token budget: never admitted
        └── FatalError              auth, quota, unknown model: stop the run at once

A row's failure is data (its status and error columns), not an exception that kills the run; only
`JobError` and `RunAborted` leave the executor.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this package raises on purpose."""


class JobError(PipelineError):
    """The job file, its inputs or the command line are wrong; nothing was sent."""


class InputError(JobError):
    """The input data cannot be used as given (file, columns, ids)."""


class RunAborted(PipelineError):
    """The run stopped before finishing (auth, quota, a streak of identical failures)."""


class RequestError(PipelineError):
    """One request attempt failed.

    `status` is the HTTP status (0 when no response came back), `code` the provider's error code or
    type when it sent one, `param` the request field the provider blamed (OpenAI's `error.param`), and
    `message` the provider's message (request id included) or ours.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.param = param

    def short(self) -> str:
        """The text for a row's error column: HTTP status, code, message."""
        head = f"HTTP {self.status}" if self.status else type(self).__name__
        if self.code:
            head += f" {self.code}"
        return f"{head}: {self.message}"[:2000]


class RetryableError(RequestError):
    """Worth another attempt after a wait."""

    retryable = True


class RateLimited(RetryableError):
    """The provider says slow down; the whole provider slows, not just this request."""


class ConcurrencyLimited(RateLimited):
    """A 429 for too many requests in flight at once (LiteLLM's max_parallel_requests): fewer at a time."""


class TransientError(RetryableError):
    """Server-side or network trouble that usually passes."""


class ConnectError(TransientError):
    """No connection to this URL; the provider's next URL may answer."""


class RowError(RequestError):
    """This request is wrong and would fail again: fail the row."""


class TooLargeError(RowError):
    """The request can never fit the provider's token budget."""


class FatalError(RequestError):
    """The account or the job is wrong (auth, quota, model): no other row will do better."""
