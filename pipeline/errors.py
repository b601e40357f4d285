"""The exception tree; the class of an error decides whether to retry, fail the row, or stop the run.

    PipelineError
    ├── JobError                    bad job file or usage (exit 2), raised before any request
    │   └── InputError              unreadable input, unknown column, duplicate ids ...
    ├── RunAborted                  the run cannot go on (exit 3)
    ├── DiskError                   writing the cache, a part or the output failed (exit 3); resumable
    └── RequestError                one request attempt failed; carries status, code, message
        ├── RetryableError          retry with backoff, then fail the row
        │   ├── RateLimited         429: slow the whole provider, honour Retry-After
        │   │   └── ConcurrencyLimited  429 naming parallel requests: lower the concurrency
        │   └── TransientError      5xx, 408/409, timeouts, resets, malformed responses
        │       ├── ConnectError    could not reach the server: try the provider's backup URL
        │       └── StreamCut       a streamed answer ended before its finish_reason
        ├── RowError                this request is bad (400, 413, 422...): fail the row, no retry
        │   └── TooLargeError       bigger than the provider's token budget: never admitted
        └── FatalError              auth, quota, unknown model: stop the run at once

A row's failure is data (its status and error columns), not an exception that kills the run; only
`JobError` and `RunAborted` leave the executor.
"""

from __future__ import annotations

import re


class PipelineError(Exception):
    """Base of every error this package raises on purpose."""


class JobError(PipelineError):
    """The job file, its inputs or the command line are wrong; nothing was sent."""


class InputError(JobError):
    """The input data cannot be used as given (file, columns, ids)."""


class RunAborted(PipelineError):
    """The run stopped before finishing (auth, quota, a streak of identical failures)."""


class DiskError(PipelineError):
    """A write to disk failed (no space, permissions, I/O error); what was written before is intact.

    `path` is the file or folder that could not be written."""

    def __init__(self, path: object, exc: BaseException) -> None:
        self.path = str(path)
        detail = f"{exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
        super().__init__(
            f"cannot write {self.path}: {detail}. Finished rows and cached answers are kept; free space "
            "(or fix the permissions) and run the same command again to resume"
        )


_KEYLIKE = re.compile(
    r"\b(sk-[A-Za-z0-9_\-]{6,}"  # OpenAI-style keys
    r"|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{6,}"  # Authorization values
    r"|(?=[\w\-]*[a-z])(?=[\w\-]*\d)[A-Za-z0-9_\-]{32,})"  # long mixed tokens (not UPPER_SNAKE names)
)


def mask_secret(value: str) -> str:
    """A key as `sk-...abcd`: enough to recognise it, never enough to use it."""
    v = value.strip()
    head = v.split("-", 1)[0] + "-" if v.startswith("sk-") else ""
    if v.lower().startswith(("bearer ", "basic ")):
        scheme, _, rest = v.partition(" ")
        return f"{scheme} {mask_secret(rest)}"
    return f"{head}...{v[-4:]}" if len(v) > 8 else "..."


def looks_like_key(value: str) -> bool:
    """True for text shaped like an API key or an Authorization value (sk-..., Bearer ..., long tokens)."""
    return bool(_KEYLIKE.search(value))


def mask_secrets(text: str) -> str:
    """`text` with everything shaped like a key masked (for messages that quote the user's input)."""
    return _KEYLIKE.sub(lambda m: mask_secret(m.group(0)), text)


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
        if self.code and self.code != str(self.status):  # gateways put the status in `code` too
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


class StreamCut(TransientError):
    """A streamed answer ended (often with `[DONE]`) before every choice had its finish_reason."""


class RowError(RequestError):
    """This request is wrong and would fail again: fail the row."""


class TooLargeError(RowError):
    """The request can never fit the provider's token budget."""


class FatalError(RequestError):
    """The account or the job is wrong (auth, quota, model): no other row will do better."""
