"""Run events on `logging`, `pipeline run --log FILE` as JSON lines, keys masked everywhere."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.logs import JsonLines, KeyMask, event
from pipeline.sim import FaultRule

from .conftest import SIM_KEY_ENV, output, run_job, write_job

KEY = "sk-test-9f8e7d6c5b4a39281706"


def test_run_log_writes_the_events_as_json_lines_and_never_the_key(
    tmp_path: Path, sim_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIM_KEY_ENV, KEY)
    sim = sim_factory(
        rate_headers=True,
        default_limits={"rpm": 50000, "tpm": 50_000_000},
        faults=[
            FaultRule(kind="rate_limit", first=3, retry_after=0.05),
            FaultRule(kind="status", status=502, every=4, times=3),
        ],
    )
    # the primary URL refuses connections: the client falls over to the simulator
    # (a 1 s period scales the gate's pause law: a 0.05 s Retry-After is a long pause, the pace comes down)
    job = write_job(
        tmp_path,
        "http://127.0.0.1:9/v1",
        rows=12,
        fallback=f"[{sim.url}]",
        limits="{rpm: 100000, tpm: 100000000, concurrency: 50, period_s: 1}",
    )
    log = tmp_path / "logs" / "run.jsonl"
    res = CliRunner().invoke(app, ["run", str(job), "--log", str(log)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert set(output(tmp_path)["label__status"]) == {"ok"}

    text = log.read_text()
    assert KEY not in text and KEY[-12:] not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"ts", "level", "event", "logger"} <= set(obj) for obj in lines)
    events = [obj["event"] for obj in lines]
    assert events[0] == "run.start" and events[-1] == "run.end"
    assert events.count("provider.rate_limited") >= 3
    assert "provider.failover" in events and "gate.pace_lowered" in events and "gate.limits_learned" in events
    retries = [obj for obj in lines if obj["event"] == "request.retry"]
    assert any(obj["status"] == 502 for obj in retries)
    assert all(obj["provider"] == "local" for obj in retries)
    end = lines[-1]
    assert end["rows_ok"] == 12 and end["rows_failed"] == 0 and end["rate_limited"] >= 3 and end["complete"]
    assert end["logger"] == "pipeline.executor" and end["level"] == "info"
    # the terminal shows what it showed before: no event lines
    assert "provider.failover" not in res.output and "request.retry" not in res.output


def test_a_log_file_that_cannot_be_written_stops_before_the_run(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=3)
    (tmp_path / "afile").write_text("")
    res = CliRunner().invoke(app, ["run", str(job), "--log", str(tmp_path / "afile" / "run.jsonl")])
    assert res.exit_code != 0
    assert "--log" in res.output and "cannot write the log file" in res.output
    assert sim.records == []


def test_key_mask_covers_message_arguments_and_fields() -> None:
    stream = io.StringIO()
    handler = JsonLines(stream, secrets=["plainsecretvalue"])
    logger = logging.getLogger("pipeline.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning(
            "refused key %s",
            "sk-abcdefghijklmnop",
            extra={"event": "x.y", "auth": "Bearer abcdefgh12345", "nested": {"k": ["plainsecretvalue"]}},
        )
        event(logger, logging.INFO, "request.retry", provider="p", attempt=2)
        event(logger, logging.DEBUG, "not.shown")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["event"] == "x.y" and first["message"] == "refused key sk-...mnop" and first["level"] == "warning"
    assert first["auth"] == "Bearer ...2345" and first["nested"] == {"k": ["...alue"]}
    assert second == {**second, "event": "request.retry", "provider": "p", "attempt": 2, "logger": "pipeline.test_logs"}
    assert "message" not in second


def test_key_mask_filter_keeps_records_and_masks_in_place() -> None:
    record = logging.LogRecord("pipeline", logging.WARNING, __file__, 1, "key %s", ("sk-zyxwvutsrqponm",), None)
    assert KeyMask().filter(record)
    assert record.getMessage() == "key sk-...ponm"


def test_an_aborted_run_logs_why_and_its_totals(
    tmp_path: Path, sim_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(SIM_KEY_ENV, KEY)
    sim = sim_factory(keys={"sk-test-another-key-0000000000": {}})  # our key is refused: 401, the run stops
    job = write_job(tmp_path, sim.url, rows=5)
    caplog.set_level(logging.INFO, logger="pipeline")
    summary = run_job(job)
    assert summary.aborted is not None
    by_event = {getattr(r, "event", None): r for r in caplog.records}
    aborted, end = by_event["run.aborted"], by_event["run.end"]
    assert aborted.levelno == logging.ERROR and "401" in aborted.reason  # type: ignore[attr-defined]
    assert end.complete is False and end.rows_ok == 0  # type: ignore[attr-defined]
    # records carry what the provider said; the JSON-lines handler and the console mask keys in them
    stream = io.StringIO()
    handler = JsonLines(stream, secrets=[KEY])
    for r in caplog.records:
        handler.handle(r)
    assert KEY not in stream.getvalue() and "run.aborted" in stream.getvalue()
