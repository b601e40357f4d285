"""Judge one answer: decode its JSON, normalise labels, validate against the schema, convert to columns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .arrow import Col, ConversionError, resolve_refs, to_arrow_value
from .schema import pointer

MAX_MESSAGES = 5  # validator messages shown to the model (and kept in the row's error)
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.S)


def decode_json(text: str) -> tuple[Any, str | None]:
    """(value, None), or (None, why it is not JSON). A Markdown code fence around the JSON is accepted."""
    t = text.strip()
    m = _FENCE.match(t)
    if m:
        t = m.group(1).strip()
    if not t:
        return None, "the answer is empty"
    try:
        return json.loads(t), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def norm_text(s: str) -> str:
    """Case and whitespace folded: " Positive\\n" and "POSITIVE" both -> "positive"."""
    return " ".join(s.split()).casefold()


def norm_label(s: str) -> str:
    """A bare label as models write it: case, whitespace, quotes and a final full stop folded."""
    return norm_text(s.strip().strip("\"'`").rstrip(".!").strip())


@dataclass(frozen=True, slots=True)
class Judgement:
    """What one answer is worth: its typed values, or why not and what to tell the model."""

    values: dict[str, Any] | None  # top-level field -> value of its column type
    reason: str | None = None  # for the row's error column
    feedback: str | None = None  # what is wrong, told to the model when re-asking
    label: str | None = None  # the label as the model wrote it (to find its tokens' probability)

    @property
    def ok(self) -> bool:
        return self.values is not None


class Checker:
    """The compiled validator of one schema plus its columns; labels mode adds normalisation."""

    def __init__(self, schema: dict[str, Any], fields: list[tuple[str, Col]], labels: list[str] | None = None) -> None:
        self.schema = schema
        self.fields = fields
        # jsonschema (and its referencing, attrs) loads only for steps with a schema: ~90 ms of start-up
        from jsonschema import Draft202012Validator
        from jsonschema.validators import validator_for

        cls = validator_for(schema, default=Draft202012Validator)
        self.validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        self.labels = labels
        self._by_norm = {norm_label(x): x for x in labels or []}

    # ----------------------------------------------------------------- labels
    def _label(self, s: str) -> str | None:
        return self._by_norm.get(norm_label(s))

    def _bare_label(self, text: str) -> Judgement | None:
        label = self._label(text)
        if label is None:
            return None
        return self._typed({"label": label}, text.strip())

    # ----------------------------------------------------------------- judging
    def judge_text(self, text: str) -> Judgement:
        """Judge an answer given as text (the message content, or a tool call's arguments)."""
        value, err = decode_json(text)
        if self.labels is not None:
            if err is not None or isinstance(value, str):
                bare = self._bare_label(value if isinstance(value, str) else text)
                if bare is not None:
                    return bare
                shown = _short(text.strip(), 80)
                allowed = ", ".join(self.labels)
                return Judgement(
                    None,
                    reason=f"not one of the labels: {shown!r}",
                    feedback=f"Your answer {shown!r} is not one of the allowed labels ({allowed}).",
                )
            if err is None and isinstance(value, dict) and isinstance(value.get("label"), str):
                written = value["label"]
                label = self._label(written)
                if label is None:
                    allowed = ", ".join(self.labels)
                    return Judgement(
                        None,
                        reason=f"not one of the labels: {written!r}",
                        feedback=f"{written!r} is not one of the allowed labels ({allowed}).",
                    )
                return self._typed({"label": label}, written)  # other keys are no reason to re-ask
        if err is not None:
            return Judgement(None, reason=f"invalid JSON: {err}", feedback=f"Your answer is not valid JSON ({err}).")
        return self.judge_value(value)

    def judge_value(self, value: Any) -> Judgement:
        """Judge a decoded JSON value."""
        return self._typed(normalise_enums(value, self.schema), None)

    def _typed(self, value: Any, label: str | None) -> Judgement:
        errors = sorted(self.validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            lines = [f"at {pointer(e.absolute_path) or '/'}: {_short(e.message)}" for e in errors[:MAX_MESSAGES]]
            if len(errors) > MAX_MESSAGES:
                lines.append(f"... and {len(errors) - MAX_MESSAGES} more")
            return Judgement(
                None,
                reason="schema violation: " + "; ".join(lines),
                feedback="Your answer does not follow the required JSON schema:\n"
                + "\n".join(f"- {line}" for line in lines),
            )
        if not isinstance(value, dict):
            return Judgement(
                None,
                reason=f"not a JSON object: {_short(json.dumps(value), 80)}",
                feedback="Your answer must be a JSON object that follows the required schema.",
            )
        try:
            values = {name: to_arrow_value(col, value.get(name), f"/{name}") for name, col in self.fields}
        except ConversionError as exc:
            return Judgement(None, reason=f"unusable value: {exc}", feedback=f"Your answer cannot be stored: {exc}.")
        return Judgement(values, label=label)


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def normalise_enums(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with strings that miss a string enum only by case or whitespace replaced by the enum's
    spelling (" Positive\\n" -> "positive"), wherever properties/items lead to an enum."""
    return _norm_walk(value, schema, schema, (), 0)


def _norm_walk(value: Any, node: Any, root: dict[str, Any], stack: tuple[str, ...], depth: int) -> Any:
    node, stack = resolve_refs(node, root, stack)
    if not isinstance(node, dict) or depth > 32:
        return value
    if isinstance(value, str) and isinstance(node.get("enum"), list) and value not in node["enum"]:
        matches = [e for e in node["enum"] if isinstance(e, str) and norm_text(e) == norm_text(value)]
        return matches[0] if len(matches) == 1 else value
    if isinstance(value, dict) and isinstance(node.get("properties"), dict):
        props = node["properties"]
        return {k: _norm_walk(v, props[k], root, stack, depth + 1) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_norm_walk(v, node["items"], root, stack, depth + 1) for v in value]
    return value
