"""Templates: sandboxed, strict, every missing column reported at once."""

from __future__ import annotations

import pytest

from pipeline.errors import JobError
from pipeline.templating import NullValue, RenderError, check_columns, compile_template


def test_render_and_columns() -> None:
    t = compile_template("Review of {{ row.product }}: {{ row['text'] | trim }}", "step `s`")
    assert t.columns == {"product", "text"}
    assert t.render({"product": "mug", "text": " ok "}) == "Review of mug: ok"


def test_static_template() -> None:
    t = compile_template("You label reviews.", "w")
    assert t.static and t.render({}) == "You label reviews."


def test_all_missing_columns_reported_at_once() -> None:
    a = compile_template("{{ row.txt }} {{ row.stars }}", "step `a`, messages[0].content")
    b = compile_template("{{ row.prodcut }}", "step `b`, messages[1].content")
    problems = check_columns([(a, "columns are"), (b, "columns are")], ["id", "text", "stars", "product"])
    assert len(problems) == 2
    assert "unknown column `txt` in step `a`, messages[0].content (did you mean `text`?)" in problems[0]
    assert "columns are: id, text, stars, product" in problems[0]
    assert "`prodcut`" in problems[1] and "did you mean `product`" in problems[1]


def test_unknown_name_rejected() -> None:
    with pytest.raises(JobError, match="unknown name"):
        compile_template("{{ text }}", "w")


def test_syntax_error() -> None:
    with pytest.raises(JobError, match="template syntax error"):
        compile_template("{{ row.text ", "w")


def test_sandbox_blocks_internals() -> None:
    t = compile_template("{{ row.text.__class__.__mro__ }}", "w")
    with pytest.raises(RenderError):
        t.render({"text": "x"})


def test_null_value_is_named() -> None:
    t = compile_template("{{ row.text }}", "w")
    with pytest.raises(NullValue, match="`text` is null"):
        t.render({"text": None})


def test_loop_variables_are_not_columns() -> None:
    t = compile_template("{% for x in row.items %}{{ x }},{% endfor %}", "w")
    assert t.columns == {"items"}
    assert t.render({"items": [1, 2]}) == "1,2,"


def test_simple_and_full_rendering_agree() -> None:
    row = {"a": "x", "b": 3, "c": 1.5, "d": True, "e": "多语言"}
    for src in ["{{ row.a }}-{{ row['b'] }} {{row.c}} {{ row.d }} {{ row.e }}\n", "plain {{ row.a }}"]:
        fast = compile_template(src, "w")
        assert fast._pieces is not None
        slow = compile_template(src + "{{ '' }}", "w")  # a constant expression forces the Jinja path
        assert slow._pieces is None
        assert fast.render(row) == slow.render(row)
    with pytest.raises(NullValue, match="`a` is null"):
        compile_template("{{ row.a }}", "w").render({"a": None})
