"""Structured answers: JSON Schemas for chat steps, checked on our side and stored as typed columns."""

from .answer import Checker, Judgement, decode_json, norm_label
from .arrow import arrow_type, field_types, to_arrow_value
from .schema import StrictIssue, label_schema, load_schema, strict_issues

__all__ = [
    "Checker",
    "Judgement",
    "StrictIssue",
    "arrow_type",
    "decode_json",
    "norm_label",
    "field_types",
    "label_schema",
    "load_schema",
    "strict_issues",
    "to_arrow_value",
]
