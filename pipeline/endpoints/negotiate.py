"""What a chat step learns about its server during a run: the structured-output form it takes (stepping
down json_schema -> json_object -> tools -> prompt on refusals, remembered in the cache folder) and
whether its streams keep being cut (then requests stop streaming)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import weakref
from pathlib import Path
from typing import Any

from ..errors import FatalError, RateLimited, RequestError, StreamCut
from ..job.model import STRUCTURED_FORMS, StructuredVia

log = logging.getLogger("pipeline")

FORMS_FILE = "structured_forms.json"  # in the cache folder: {"<base_url>|<model>": "<form>"}
# A provider's requests stop streaming once one request had its stream cut this many times in a row, or
# its streams were cut PROVIDER_CUTS_TO_STOP times in a row (an occasional cut is only retried).
STREAM_CUTS_TO_STOP = 3
PROVIDER_CUTS_TO_STOP = 6

# What a refusal of the form names (a refusal of our schema itself is not a refusal of the form).
_FORM_WORDS = {
    "json_schema": re.compile(r"response_format|json_schema", re.IGNORECASE),
    "json_object": re.compile(r"response_format|json_object|json_schema", re.IGNORECASE),
    "tools": re.compile(r"\btools?\b|tool_choice|function", re.IGNORECASE),
}
_SCHEMA_CODES = frozenset({"invalid_json_schema", "invalid_function_parameters"})


def refuses_form(err: RequestError, form: StructuredVia) -> bool:
    """True when `err` is the server refusing the structured-output form itself (whatever its status:
    llama-cpp-python answers 500 "Input should be 'text' or 'json_object'" naming response_format.type)."""
    words = _FORM_WORDS.get(form)
    if words is None or isinstance(err, FatalError | RateLimited | StreamCut):
        return False
    if not 400 <= err.status < 600 or err.status in (401, 403, 408, 429) or err.code in _SCHEMA_CODES:
        return False
    return bool(words.search(f"{err.message} {err.param or ''}"))


def next_form(form: StructuredVia) -> StructuredVia | None:
    i = STRUCTURED_FORMS.index(form)
    return STRUCTURED_FORMS[i + 1] if i + 1 < len(STRUCTURED_FORMS) else None


class _Remembered:
    """The forms found in earlier runs, in a small JSON file of the cache folder (None: not kept)."""

    def __init__(self, directory: Path | None) -> None:
        self.path = directory / FORMS_FILE if directory is not None else None

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> StructuredVia | None:
        v = self._read().get(key)
        return v if v in STRUCTURED_FORMS else None

    def put(self, key: str, form: StructuredVia) -> None:
        if self.path is None:
            return
        data = self._read()
        data[key] = form
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(OSError):  # remembering is a convenience: never fail a run for it
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


class FormChoice:
    """The structured-output form for one provider URL + model, shared by every row of the run.

    Until a request in the current form has been answered, first requests go one at a time (`lock`),
    so rows sent at once do not each discover the same refusal.
    """

    def __init__(
        self, provider: str, base_url: str, model: str, start: StructuredVia, remembered: _Remembered, *, pinned: bool
    ) -> None:
        self.provider = provider
        self.key = f"{base_url}|{model}"
        self.where = f"provider `{provider}` ({base_url}), model `{model}`"
        self._remembered = remembered
        self.pinned = pinned
        known = None if pinned else remembered.get(self.key)
        self.form: StructuredVia = known or start
        self.settled = pinned or known is not None
        self.lock = asyncio.Lock()

    def confirm(self, form: StructuredVia) -> None:
        """A request in `form` was answered."""
        if form == self.form:
            self.settled = True

    def refused(self, form: StructuredVia, err: RequestError) -> StructuredVia | None:
        """The server refused `form`: the form to send next (None: none left, or the form is pinned)."""
        if self.pinned:
            return None
        if form != self.form:  # another row already stepped down
            return self.form
        nxt = next_form(form)
        if nxt is None:
            return None
        self.form = nxt
        self.settled = False
        self._remembered.put(self.key, nxt)
        where = f" (remembered in {self._remembered.path})" if self._remembered.path else ""
        log.warning(
            "%s refuses structured output as %s (%s); sending %s from now on%s. Pin a form with "
            "`structured_via:` on the step.",
            self.where,
            form,
            err.short()[:300],
            _described(nxt),
            where,
            extra={"event": "structured_form_fallback", "from_form": form, "to_form": nxt},
        )
        return nxt


def _described(form: StructuredVia) -> str:
    return {
        "json_schema": "response_format json_schema",
        "json_object": "response_format json_object with the schema",
        "tools": "a forced function call whose parameters are the schema",
        "prompt": "the schema in the prompt",
    }[form]


class StreamWatch:
    """Cut streams of one provider; when it keeps cutting them, its requests stop streaming."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.cuts = 0  # in a row, over all requests
        self.off = False

    def ok(self) -> None:
        self.cuts = 0

    def cut(self, err: StreamCut, in_a_row: int) -> bool:
        """Count a cut stream (`in_a_row`: cuts of this request so far, this one included); True once
        streaming is off for the provider."""
        if self.off:
            return True
        self.cuts += 1
        if in_a_row >= STREAM_CUTS_TO_STOP or self.cuts >= PROVIDER_CUTS_TO_STOP:
            self.off = True
            what = f"one request {in_a_row} times" if in_a_row >= STREAM_CUTS_TO_STOP else f"{self.cuts} in a row"
            log.warning(
                "provider `%s` keeps cutting answer streams (%s: %s): its requests are sent without streaming "
                "for the rest of the run (llama.cpp's server ends a stream whenever another request arrives).",
                self.provider,
                what,
                err.message[:200],
                extra={"event": "streaming_off", "provider": self.provider},
            )
        return self.off


class ProviderQuirks:
    """Everything learned about one provider during a run."""

    def __init__(self, provider: str, base_url: str, cache_dir: Path | None) -> None:
        self.provider = provider
        self.base_url = base_url
        self.streams = StreamWatch(provider)
        self._remembered = _Remembered(cache_dir)
        self._forms: dict[tuple[str, StructuredVia | None], FormChoice] = {}

    def form(self, model: str, start: StructuredVia, pinned: StructuredVia | None) -> FormChoice:
        key = (model, pinned)
        if key not in self._forms:
            self._forms[key] = FormChoice(
                self.provider, self.base_url, model, pinned or start, self._remembered, pinned=pinned is not None
            )
        return self._forms[key]


_QUIRKS: weakref.WeakKeyDictionary[Any, ProviderQuirks] = weakref.WeakKeyDictionary()


def quirks_for(client: Any, provider: str) -> ProviderQuirks:
    """The run's ProviderQuirks of a provider client (one per client: steps on one provider share it)."""
    q = _QUIRKS.get(client)
    if q is None:
        directory = getattr(client.cache, "directory", None)
        q = ProviderQuirks(
            provider, client.transport.provider.base_urls[0], Path(directory) if directory is not None else None
        )
        _QUIRKS[client] = q
    return q
