"""The seams: the row engine without files, gates from an injected factory, request specs as plain data."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.cache import NoCache
from pipeline.calls import ProviderClient, RunStats
from pipeline.endpoints.completion import CompletionRuntime
from pipeline.engine import RecordShape, RowEngine
from pipeline.executor import RunOptions, execute
from pipeline.gates import LocalGates
from pipeline.job.model import CompletionStep, Retry
from pipeline.job.profiles import ResolvedProvider
from pipeline.limits import AdmissionGate
from pipeline.plan import DEFAULT_ID, build_plan
from pipeline.ports import Gate
from pipeline.requests import FilePart, HttpRequest, Multipart
from pipeline.tokens import counter
from pipeline.transport import HttpResponse, Transport, new_session

from .conftest import output, write_job


def chat_calls(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/chat/completions")]


def test_engine_processes_rows_into_records_without_files(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=6)
    plan = build_plan(job)
    rows = [(i, {"review_id": f"x{i}", "text": f"I love it ({i})"}) for i in range(4)]
    rows.append((4, {"review_id": "x4", "text": None}))  # a null in the template: skipped, not sent

    async def main() -> list[dict[str, Any]]:
        stats = RunStats()
        gates = LocalGates()
        async with new_session(8) as session:
            clients = {
                name: ProviderClient(
                    Transport(p, plan.api_keys[name], session),
                    gates(p, plan.api_keys[name]),
                    NoCache(),
                    plan.job.spec.retry,
                    stats,
                    rng=random.Random(0),
                )
                for name, p in plan.providers.items()
            }
            engine = RowEngine(
                plan.steps,
                clients,
                stats,
                RecordShape(plan.carried_columns, plan.id_column, DEFAULT_ID),
                window=8,
                charges={},
                stop_after_identical_failures=100,
            )
            return await engine.process(rows)

    records = asyncio.run(main())
    by_id = {r["review_id"]: r for r in records}
    assert set(by_id) == {"x0", "x1", "x2", "x3", "x4"}
    assert [by_id[f"x{i}"]["label__status"] for i in range(5)] == ["ok"] * 4 + ["skipped"]
    assert all(by_id[f"x{i}"]["__row"] == i for i in range(5))
    assert len(chat_calls(sim)) == 4, "one request per row with a value, none for the skipped row"
    assert not (tmp_path / "out").exists(), "the engine writes no file"


def test_gates_come_from_the_factory_the_runner_is_given(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    asked: list[tuple[str, str | None]] = []
    local = LocalGates()

    def factory(provider: ResolvedProvider, api_key: str | None) -> Gate:
        asked.append((provider.base_urls[0], api_key))
        return local(provider, api_key)

    summary = asyncio.run(execute(build_plan(job), RunOptions(), gates=factory))
    assert asked == [(sim.url, "test-key")]
    assert summary.stats.requests == 5
    assert output(tmp_path)["label__status"].to_list() == ["ok"] * 5


def test_local_gates_are_shared_by_providers_with_one_key_and_url(tmp_path: Path, sim: Any) -> None:
    plan = build_plan(write_job(tmp_path, sim.url, rows=1))
    p = plan.providers["local"]
    gates = LocalGates()
    assert gates(p, "k1") is gates(p, "k1")
    assert gates(p, "k1") is not gates(p, "k2")


def test_an_images_per_minute_provider_never_shares_a_token_gate(tmp_path: Path, sim: Any) -> None:
    # a chat provider and an image provider on one URL and key: the image gate holds images, not tokens
    plan = build_plan(write_job(tmp_path, sim.url, rows=1))
    chat = plan.providers["local"]
    images = dataclasses.replace(chat, limits=chat.limits.model_copy(update={"tpm": None, "ipm": 60}))
    gates = LocalGates()
    token_gate, image_gate = gates(chat, "k1"), gates(images, "k1")
    assert token_gate is not image_gate
    assert image_gate.tpm == 60 and token_gate.tpm == chat.limits.fixed("tpm")
    assert gates(images, "k1") is image_gate


def test_a_request_spec_is_plain_data() -> None:
    spec = HttpRequest(
        "/audio/transcriptions",
        multipart=Multipart(
            (("model", "whisper-1"), ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")),
            (FilePart(Path("/data/a.wav"), "a.wav", "audio/wav"),),
        ),
    )
    assert spec.preview() == {
        "file": "/data/a.wav",
        "model": "whisper-1",
        "timestamp_granularities[]": ["word", "segment"],
    }
    assert spec == HttpRequest("/audio/transcriptions", multipart=spec.multipart)
    tree = ast.parse(inspect.getsource(sys.modules["pipeline.requests"]))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.split(".")[0] == "aiohttp"}, imported


class DictCache:
    """A `ports.Cache` in a dict."""

    enabled = True

    def __init__(self) -> None:
        self.entries: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.entries.get(key)

    def prefetch(self, keys: Iterable[str]) -> None:
        return None

    async def store(self, key: str, body: bytes) -> None:
        self.entries[key] = body

    async def store_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        self.entries.update(items)

    def delete(self, key: str) -> None:
        self.entries.pop(key, None)

    def close(self) -> None:
        return None


class EchoTransport:
    """A `ports.Transport` without sockets: a legacy completion that upper-cases the prompt; row `boom`
    gets a 400."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, req: HttpRequest) -> HttpResponse:
        body = json.loads(req.data or b"{}")
        self.sent.append(body)
        if "boom" in body["prompt"]:
            return HttpResponse(400, b'{"error": {"message": "bad prompt", "type": "invalid_request_error"}}')
        answer = {
            "choices": [{"index": 0, "text": body["prompt"].upper(), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
        return HttpResponse(200, json.dumps(answer).encode())

    async def get(self, endpoint: str) -> HttpResponse:
        return HttpResponse(200, b'{"data": []}')


def test_the_engine_sends_and_caches_for_a_sans_io_kind_through_the_seams(tmp_path: Path) -> None:
    step = CompletionRuntime(
        CompletionStep(name="c", kind="completion", provider="p", model="m", prompt="say {{ row.word }}"),
        "ns",
        counter("heuristic"),
    )
    gate = AdmissionGate(rpm=None, tpm=None, concurrency=2)
    transport, cache = EchoTransport(), DictCache()
    rows = [(i, {"id": i, "word": w}) for i, w in enumerate(["hi", "boom", "yo"])]

    async def main() -> list[list[dict[str, Any]]]:
        stats = RunStats()
        client = ProviderClient(transport, gate, cache, Retry(max_attempts=2), stats)
        engine = RowEngine(
            [step],
            {"p": client},
            stats,
            RecordShape(["id"], "id", DEFAULT_ID),
            window=4,
            charges={},
            stop_after_identical_failures=10,
        )
        first = await engine.process(rows)
        again = await engine.process(rows[:1] + rows[2:])
        return [first, again]

    first, again = asyncio.run(main())
    by_id = {r["id"]: r for r in first}
    assert by_id[0]["c"] == "SAY HI" and by_id[2]["c"] == "SAY YO"
    assert by_id[1]["c__status"] == "error" and "bad prompt" in by_id[1]["c__error"]
    assert sorted(b["prompt"] for b in transport.sent) == ["say boom", "say hi", "say yo"]
    assert {r["c__cached"] for r in again} == {True}, "the second pass is answered from the cache"
    assert len(transport.sent) == 3


def test_a_run_leaves_the_plans_steps_unbound(tmp_path: Path, sim: Any) -> None:
    plan = build_plan(write_job(tmp_path, sim.url, rows=4))
    asyncio.run(execute(plan, RunOptions()))
    assert not hasattr(plan.steps[0], "client") and plan.steps[0].spawner is None
    summary = asyncio.run(execute(plan, RunOptions(fresh=True)))  # the same plan runs again, from the cache
    assert summary.stats.cache_hits == 4 and summary.stats.requests == 0
