"""Issue 9: nothing the user owns is overwritten, no value silently changed, every bad input refused
clearly (before any request when it can be known), disk errors resumable."""

from __future__ import annotations

import errno
import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import sinks
from pipeline.cli import app
from pipeline.sim import FaultRule
from pipeline.tokens import counter

from .conftest import SIM_KEY_ENV, output, reviews, write_job
from .test_embed import docs, result, with_text, write_embed_job

runner = CliRunner()
KEY = "sk-proj-Zx81aQ2wE4rT6yU8iO0pLkJhGfDsA1234"


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def edit(job: Path, old: str, new: str) -> Path:
    text = job.read_text()
    assert old in text, old
    job.write_text(text.replace(old, new))
    return job


def refused(job: Path, sim: Any, *commands: str) -> str:
    """Run and validate both refuse the job with exit 2, and nothing reaches the server."""
    msgs = []
    for cmd in commands or ("run", "validate"):
        res = cli(cmd, str(job), *(["--quiet"] if cmd == "run" else []))
        assert res.exit_code == 2, (cmd, res.output)
        msgs.append(flat(res.output))
    assert sim.records == [], "nothing may be sent for a bad job"
    return msgs[0]


def post(sim: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        sim.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer any-key", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ----- 1, 8: the output path


def test_output_equal_to_the_input_is_refused_and_the_input_kept(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    edit(job, f"path: {tmp_path / 'out' / 'labeled.parquet'}", f"path: {tmp_path / 'reviews.csv'}")
    before = (tmp_path / "reviews.csv").read_bytes()
    msg = refused(job, sim)
    assert "is the input file" in msg and "choose another output.path" in msg
    assert (tmp_path / "reviews.csv").read_bytes() == before


def test_an_existing_file_that_is_not_this_jobs_output_is_never_replaced(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    out = tmp_path / "out" / "labeled.parquet"
    out.parent.mkdir()
    pl.DataFrame({"precious": [1, 2, 3]}).write_parquet(out)  # someone's data, not written by pipeline
    before = out.read_bytes()
    msg = refused(job, sim)
    assert "exists and was not written by pipeline" in msg and "delete it yourself" in msg
    assert out.read_bytes() == before
    # another job's output is not this job's either
    out.unlink()
    assert cli("run", str(job), "--quiet").exit_code == 0
    other = edit(job, "name: test-job", "name: other-job")
    res = cli("run", str(other), "--quiet")
    assert res.exit_code == 2 and "output of another job (`test-job`)" in flat(res.output)
    # while the job's own output, even after the job changed, is its to replace
    edit(job, "name: other-job", "name: test-job")
    edit(job, "max_tokens: 5", "max_tokens: 6")
    assert cli("run", str(job), "--quiet").exit_code == 0
    assert pq.ParquetFile(out).metadata.metadata[b"pipeline.job"] == b"test-job"


def test_files_beside_the_output_that_are_not_ours_are_never_replaced(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "labeled.parquet.lock").write_text("my lock notes")
    (out / "labeled.parquet.work").mkdir()
    (out / "labeled.parquet.work" / "mine.txt").write_text("keep me")
    msg = refused(job, sim)
    assert "labeled.parquet.lock exists and is not a lock file of pipeline" in msg
    assert "labeled.parquet.work exists and is not a work folder of pipeline" in msg
    assert (out / "labeled.parquet.lock").read_text() == "my lock notes"
    assert (out / "labeled.parquet.work" / "mine.txt").read_text() == "keep me"


def test_output_under_a_file_is_refused(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    edit(job, f"path: {tmp_path / 'out' / 'labeled.parquet'}", f"path: {tmp_path / 'reviews.csv' / 'o.parquet'}")
    assert "which is a file, not a folder" in refused(job, sim)


def test_output_that_is_an_existing_folder_is_refused_before_any_request(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    (tmp_path / "out" / "labeled.parquet").mkdir(parents=True)
    msg = refused(job, sim)
    assert "is an existing folder" in msg and "name a file" in msg


# ----- 2, 3: input typing


def test_csv_values_stay_text_unless_the_schema_says_otherwise(tmp_path: Path, sim: Any) -> None:
    data = pl.DataFrame(
        {
            "review_id": ["007", "7", "0x1"],
            "text": ["a", "b", "c"],
            "zip": ["01234", "2", "3"],
            "stars": ["4", "5", "1"],
        }
    )
    job = write_job(tmp_path, sim.url, data=data)
    edit(job, "Review: {{ row.text }}", "Review: {{ row.text }} from {{ row.zip }}, {{ row.stars + 1 }} stars")
    edit(job, "id: review_id", "id: review_id\n  schema: {stars: int64}")
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 0, res.output  # `007` and `7` are two ids, not duplicates
    df = output(tmp_path)
    assert df["review_id"].to_list() == ["007", "7", "0x1"] and df["zip"].to_list() == ["01234", "2", "3"]
    assert df.schema["stars"] == pl.Int64
    prompts = [r.body["messages"][1]["content"] for r in sim.records]
    assert "Review: a from 01234, 5 stars" in prompts


def test_declared_types_convert_csv_text_and_name_what_does_not_fit(tmp_path: Path) -> None:
    from pipeline.errors import InputError
    from pipeline.sources import Source

    csv = tmp_path / "t.csv"
    csv.write_text("id,flag,day,price,n\n001,yes,2024-01-31,1.5, 7\n002,False,2024-02-01,2,\n")
    types = {"flag": "bool", "day": "date", "price": "float64", "n": "int32"}
    src = Source.open(csv, format=None, id_column="id", limit=None, dtypes=types)
    assert src.check() == 2
    df = next(src.batches(10))
    assert df["id"].to_list() == ["001", "002"] and df["flag"].to_list() == [True, False]
    assert str(df["day"][0]) == "2024-01-31" and df["price"].to_list() == [1.5, 2.0] and df["n"].to_list() == [7, None]
    csv.write_text("id,day\n1,2024-01-31\n2,31/01/2024\n")
    with pytest.raises(
        InputError,
        match=r"row 2 \(1-based, header excluded\): column `day` holds '31/01/2024', "
        r"which is not date",
    ):
        Source.open(csv, format=None, id_column="id", limit=None, dtypes={"day": "date"}).check()
    with pytest.raises(InputError, match="input.schema names column\\(s\\) dya, which .* does not have"):
        Source.open(csv, format=None, id_column="id", limit=None, dtypes={"dya": "date"})


def test_a_value_that_breaks_the_declared_type_late_in_the_file_is_found_before_any_request(
    tmp_path: Path, sim: Any
) -> None:
    n = 12_000
    stars = [str(i % 5) for i in range(n)]
    stars[10_500] = "X-11"
    data = reviews(n).with_columns(pl.Series("stars", stars))
    job = write_job(tmp_path, sim.url, data=data)
    edit(job, "id: review_id", "id: review_id\n  schema: {stars: int64}")
    msg = refused(job, sim)
    assert "row 10501 (1-based, header excluded)" in msg and "column `stars` holds 'X-11'" in msg
    assert "not int64" in msg


def test_jsonl_with_mixed_types_is_found_before_any_request(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3)
    lines = [{"review_id": i, "text": f"t{i}"} for i in range(11_000)]
    lines[10_200]["review_id"] = "X-11"
    (tmp_path / "reviews.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    edit(job, "reviews.csv", "reviews.jsonl")
    msg = refused(job, sim)
    assert "line 10201" in msg and "field `review_id` holds 'X-11'" in msg and "mixed types" in msg
    # declaring the type settles it: ids are then text, and all distinct
    edit(job, "id: review_id", "id: review_id\n  schema: {review_id: string}\n  limit: 3")
    assert cli("run", str(job), "--quiet").exit_code == 0


# ----- 4, 5: very long inputs


def test_inputs_the_tokenizer_refuses_fail_or_truncate_only_their_row(tmp_path: Path, sim: Any) -> None:
    huge = "word " * 420_000  # 2.1 MB: bpe-openai refuses to encode it in one piece
    assert counter("o200k_base")(huge) > 400_000  # counted piece by piece, no exception
    data = with_text(docs(6), {"d00002": huge})
    res = cli("run", str(write_embed_job(tmp_path, sim.url, data=data)), "--quiet")
    assert res.exit_code == 0, res.output
    df = result(tmp_path)
    assert df["emb__truncated"].to_list() == [i == 2 for i in range(6)] and set(df["emb__status"]) == {"ok"}
    other = tmp_path / "strict"
    other.mkdir()
    res = cli("run", str(write_embed_job(other, sim.url, data=data, step="on_too_long: error")), "--quiet")
    assert res.exit_code == 1, res.output
    df = result(other)
    assert df["emb__status"].to_list() == ["ok", "ok", "error", "ok", "ok", "ok"]
    assert "more than 8,191 tokens" in df["emb__error"][2]


def test_a_prompt_too_long_for_the_model_fails_its_row_with_a_400(tmp_path: Path, sim: Any) -> None:
    data = reviews(4).with_columns(
        pl.when(pl.col("review_id") == "r00001").then(pl.lit("long " * 250_000)).otherwise(pl.col("text")).alias("text")
    )
    job = write_job(tmp_path, sim.url, data=data)
    edit(job, "timeout_s: 10", "timeout_s: 60\n    tokenizer: o200k_base")  # the exact count: bpe-openai
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 1, res.output
    df = output(tmp_path)
    assert df["label__status"].to_list() == ["ok", "error", "ok", "ok"]
    assert "HTTP 400 context_length_exceeded" in df["label__error"][1] and df["label__attempts"][1] == 1
    assert "Traceback" not in res.output
    assert {r.status for r in sim.records} == {200, 400}


# ----- 7: validate renders the sample rows for real


def test_validate_fails_when_a_sample_row_cannot_be_rendered(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3)
    edit(job, "Review: {{ row.text }}", "Review: {{ row.text.__class__.__mro__ }}")
    res = cli("validate", str(job))
    assert res.exit_code == 2, res.output
    assert "could not be built" in flat(res.output) and "SecurityError" in res.output
    assert "ok:" not in res.output and sim.records == []


# ----- 9: keys where they do not belong


def test_a_key_pasted_as_api_key_env_is_masked(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=2)
    edit(job, f"api_key_env: {SIM_KEY_ENV}", f"api_key_env: {KEY}")
    msg = refused(job, sim)
    assert "looks like an API key" in msg and "sk-...1234" in msg and KEY not in msg


def test_a_key_in_headers_is_warned_about_masked(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=2)
    edit(job, "timeout_s: 10", f"timeout_s: 10\n    headers: {{Authorization: 'Bearer {KEY}'}}")
    res = cli("validate", str(job))
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert "sets header Authorization: Bearer sk-...1234" in text and KEY not in res.output


# ----- 10, 11: what the end of a run says


def test_abort_after_a_streak_says_retry_failed(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule(kind="status", status=400, error_type="invalid_request_error")])
    job = write_job(tmp_path, sim.url, rows=30, extra="run: {stop_after_identical_failures: 3}")
    res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    text = flat(res.output)
    assert f"resume with: pipeline run {job} --retry-failed" in text


def summary_row(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("│ label "))
    return [c.strip() for c in line.split("│") if c.strip()]


def test_a_rerun_shows_the_whole_outputs_state(tmp_path: Path, sim: Any) -> None:
    sim.set_faults([FaultRule(kind="status", status=400, error_type="invalid_request_error", when_contains="#3)")])
    job = write_job(tmp_path, sim.url, rows=10)
    assert cli("run", str(job)).exit_code == 1
    n = len(sim.records)
    res = cli("run", str(job))  # finished: nothing to send
    assert res.exit_code == 1 and len(sim.records) == n
    cells = summary_row(res.output)
    assert cells[:6] == ["label", "9", "1", "0", "0", "0"] and "nothing to do" in cells[6]
    # a resumed run counts the whole output too, and says what it did itself
    sim.set_faults([])
    res = cli("run", str(job), "--retry-failed")
    assert res.exit_code == 0
    row = summary_row(res.output)
    assert row[:6] == ["label", "10", "0", "0", "0", "0"] and row[6] == "1 ok"


# ----- 12: params


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            "{temprature: 0}",
            "params.temprature is not a parameter of chat completions (/chat/completions); did you mean `temperature`?",
        ),
        ("{temperature: hot}", "params.temperature must be a number from 0 to 2, got 'hot' (text)"),
        ("{max_tokens: -5}", "params.max_tokens must be a whole number >= 1, got -5"),
        ("{max_tokens: 0}", "params.max_tokens must be a whole number >= 1, got 0"),
        ("{max_tokens: abc}", "params.max_tokens must be a whole number >= 1, got 'abc' (text)"),
        ("{top_p: 1.5}", "params.top_p must be a number from 0 to 1, got 1.5"),
    ],
)
def test_params_are_checked_against_the_endpoint(tmp_path: Path, sim: Any, params: str, expected: str) -> None:
    job = edit(write_job(tmp_path, sim.url, rows=2), "params: {temperature: 0, max_tokens: 5}", f"params: {params}")
    assert expected in refused(job, sim)


def test_embed_params_and_extra_params_of_a_provider(tmp_path: Path, sim: Any) -> None:
    job = write_embed_job(tmp_path, sim.url, rows=3, params="{dimension: 256}")
    res = cli("validate", str(job))
    assert res.exit_code == 2 and "did you mean `dimensions`?" in flat(res.output)
    # a server with its own parameters: allowed with a note, and then the server has the last word
    job = edit(
        write_job(tmp_path, sim.url, rows=2),
        "params: {temperature: 0, max_tokens: 5}",
        "params: {temperature: 0, top_k: 5}",
    )
    edit(job, "timeout_s: 10", "timeout_s: 10\n    extra_params: warn")
    res = cli("run", str(job))
    assert res.exit_code == 1
    text = flat(res.output)
    assert "params.top_k is not a parameter of chat completions" in text and "sent as is" in text
    error = output(tmp_path)["label__error"][0]
    assert "HTTP 400 unknown_parameter: Unrecognized request argument supplied: top_k" in error


def test_the_simulator_rejects_what_the_api_rejects(sim: Any) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    cases = [
        ({"temprature": 1}, "temprature", "unknown_parameter"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ]
    for extra, param, code in cases:
        status, body = post(sim, "/chat/completions", {"model": "gpt-4o-mini", "messages": msgs, **extra})
        assert status == 400 and body["error"]["param"] == param and body["error"]["code"] == code, body
    status, body = post(sim, "/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimension": 3})
    assert status == 400 and body["error"]["param"] == "dimension"
    status, body = post(
        sim, "/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x " * 600_000}]}
    )
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    form = (
        b"".join(
            b'--B\r\nContent-Disposition: form-data; name="%s"%s\r\n\r\n%s\r\n' % (k, extra, v)
            for k, extra, v in [
                (b"model", b"", b"whisper-1"),
                (b"temprature", b"", b"0"),
                (b"file", b'; filename="a.wav"', b"RIFF"),
            ]
        )
        + b"--B--\r\n"
    )
    req = urllib.request.Request(
        sim.url + "/audio/transcriptions",
        data=form,
        method="POST",
        headers={"Authorization": "Bearer any-key", "Content-Type": "multipart/form-data; boundary=B"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    assert caught.value.code == 400 and json.loads(caught.value.read())["error"]["param"] == "temprature"


# ----- 13: small messages


def test_an_empty_input_file_says_so(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=2)
    (tmp_path / "reviews.csv").write_bytes(b"")
    assert "is empty (0 bytes)" in refused(job, sim)


def test_a_validator_message_does_not_end_with_the_type_of_params(tmp_path: Path, sim: Any) -> None:
    job = edit(write_job(tmp_path, sim.url, rows=2), "max_tokens: 5}", "max_tokens: 5, n: 0}")
    msg = refused(job, sim, "run")
    assert "params.n must be an integer >= 1, got 0" in msg and "(got dict)" not in msg


def test_a_glob_of_tables_says_what_a_glob_means(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=2)
    reviews(2).write_csv(tmp_path / "more.csv")
    edit(job, f"path: {tmp_path / 'reviews.csv'}", f"path: {tmp_path / '*.csv'}")
    msg = refused(job, sim)
    assert "a glob means one row per FILE" in msg and "join them into one file" in msg


def test_name_is_optional(tmp_path: Path, sim: Any) -> None:
    job = edit(write_job(tmp_path, sim.url, rows=2), "name: test-job\n", "")
    res = cli("run", str(job))
    assert res.exit_code == 0, res.output
    assert res.output.startswith("job: 2 rows")  # the file's stem
    assert pq.ParquetFile(tmp_path / "out" / "labeled.parquet").metadata.metadata[b"pipeline.job"] == b"job"


# ----- 14: disk errors


def _enospc(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_writing_a_part_exits_3_and_resumes(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, sim.url, rows=12)
    with monkeypatch.context() as m:
        m.setattr(sinks.pq, "write_table", _enospc)
        res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    text = flat(res.output)
    assert "disk error: cannot write" in text and "labeled.parquet.work/part-000001.parquet" in text
    assert "No space left on device" in text and "run the same command again" in text
    sent = len(sim.records)
    assert sent == 12
    res = cli("run", str(job), "--quiet")  # space is back: every answer comes from the cache
    assert res.exit_code == 0, res.output
    assert len(sim.records) == sent and output(tmp_path).height == 12


def test_disk_full_while_writing_the_final_file_keeps_the_parts(
    tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = write_job(tmp_path, sim.url, rows=12)
    with monkeypatch.context() as m:
        m.setattr(sinks.pq, "ParquetWriter", _enospc)
        res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    assert f"cannot write {tmp_path / 'out' / 'labeled.parquet'}" in flat(res.output)
    assert list((tmp_path / "out" / "labeled.parquet.work").glob("part-*.parquet"))
    sent = len(sim.records)
    assert cli("run", str(job), "--quiet").exit_code == 0
    assert len(sim.records) == sent and output(tmp_path).height == 12


def test_disk_full_while_writing_the_cache_exits_3(tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    job = write_job(tmp_path, sim.url, rows=5)

    def full(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(diskcache.Cache, "set", full)
        res = cli("run", str(job), "--quiet")
    assert res.exit_code == 3, res.output
    assert f"cannot write {tmp_path / 'cache'}: database or disk is full" in flat(res.output)
    assert cli("run", str(job), "--quiet").exit_code == 0
    assert output(tmp_path).height == 5


# ----- README


def test_readme_example_is_the_quickstart_job_and_every_command_and_flag_is_listed() -> None:
    import re

    import typer.main
    import yaml

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    example = readme.split("The quickstart's job, `jobs/label_reviews.yaml`:", 1)[1].split("```yaml", 1)[1]
    assert yaml.safe_load(example.split("```", 1)[0]) == yaml.safe_load((root / "jobs/label_reviews.yaml").read_text())
    assert "jobs/label_reviews.yaml" in (root / "scripts/quickstart.sh").read_text()
    commands = readme.split("## Commands", 1)[1].split("## Output", 1)[0]

    def walk(cmd: Any, prefix: str) -> list[tuple[str, Any]]:
        if hasattr(cmd, "commands"):  # a group
            return [x for name, sub in cmd.commands.items() for x in walk(sub, f"{prefix} {name}")]
        return [(prefix, cmd)]

    found = walk(typer.main.get_command(app), "pipeline")
    assert len(found) >= 8
    for name, cmd in found:
        assert f"`{name}" in commands, name
        row = next(line for line in commands.splitlines() if f"`{name}" in line)
        for param in cmd.params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("--") and flag != "--help":
                    assert re.search(re.escape(flag) + r"\b", row), (name, flag)
