"""The seams: the row engine without files, gates from an injected factory, request specs as plain data."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import json
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.cache import NoCache
from pipeline.calls import ProviderClient, RunStats
from pipeline.endpoints.base import Done, Local, Prepared
from pipeline.endpoints.completion import CompletionRuntime
from pipeline.engine import RecordShape, RowEngine
from pipeline.errors import RunAborted
from pipeline.executor import RunOptions, execute
from pipeline.gates import LocalGates
from pipeline.job.model import CompletionStep, Retry
from pipeline.job.profiles import ResolvedProvider
from pipeline.limits import AdmissionGate
from pipeline.plan import DEFAULT_ID, build_plan
from pipeline.ports import Gate
from pipeline.records import Parsed, StepResult
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
        engine = small_engine(step, client, stats)
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


# ----- a graceful stop (the first Ctrl-C): requests on the wire finish, nothing new is sent


class PiecesRuntime(CompletionRuntime):
    """A kind whose row needs three requests sent at once (as the pieces of a split audio file)."""

    sends_at_once = True

    def exchange(self, first: Any) -> Any:
        async def split() -> list[str]:
            return [f"{first.request.json_body['prompt']} piece {i}" for i in range(3)]

        pieces = yield Local(split)
        replies = yield [self.prepare({"word": p}) for p in pieces]
        texts = [outcome.parsed.values["c"] for _, outcome in replies]
        return Done(StepResult("ok", {"c": " + ".join(texts), "c__finish_reason": "stop"}, attempts=1))


class WireTransport:
    """A `ports.Transport` whose requests stay on the wire until the test lets them be answered."""

    def __init__(self) -> None:
        self.sent: list[str] = []  # prompts, in the order they went on the wire
        self.dropped: list[str] = []  # requests cancelled on the wire (their answers paid for, lost)
        self.answered: list[str] = []
        self._go: dict[str, asyncio.Event] = {}
        self._arrived = asyncio.Event()
        self._open = False

    def go(self, prompt: str | None = None) -> None:
        """Answer `prompt` (None: every request, also those still to come)."""
        if prompt is None:
            self._open = True
            for e in self._go.values():
                e.set()
        else:
            self._go.setdefault(prompt, asyncio.Event()).set()

    async def on_the_wire(self, n: int) -> None:
        while len(self.sent) - len(self.answered) - len(self.dropped) < n:
            self._arrived.clear()
            await self._arrived.wait()

    async def send(self, req: HttpRequest) -> HttpResponse:
        prompt = req.endpoint if req.method == "GET" else json.loads(req.data or b"{}")["prompt"]
        self.sent.append(prompt)
        self._arrived.set()
        go = self._go.setdefault(prompt, asyncio.Event())
        if self._open:
            go.set()
        try:
            await go.wait()
        except asyncio.CancelledError:
            self.dropped.append(prompt)
            raise
        self.answered.append(prompt)
        if req.method == "GET":
            return HttpResponse(200, prompt.encode())
        answer = {
            "choices": [{"index": 0, "text": prompt.upper(), "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }
        return HttpResponse(200, json.dumps(answer).encode())

    async def get(self, endpoint: str) -> HttpResponse:
        return HttpResponse(200, b'{"data": []}')


class HookedCache(DictCache):
    """A DictCache that calls `on_store(key)` as each answer is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.on_store: Any = None

    async def store(self, key: str, body: bytes) -> None:
        self.entries[key] = body
        if self.on_store is not None:
            self.on_store(key)


def pieces_engine(transport: Any, cache: Any) -> RowEngine:
    """An engine for one PiecesRuntime step under a concurrency of 2, its client stopping with it."""
    step = PiecesRuntime(
        CompletionStep(name="c", kind="completion", provider="p", model="m", prompt="say {{ row.word }}"),
        "ns",
        counter("heuristic"),
    )
    return stopping_engine(step, transport, cache)


def stopping_engine(step: Any, transport: Any, cache: Any) -> RowEngine:
    """An engine for `step` under a concurrency of 2, its client stopping with it."""
    stats = RunStats()
    engine: RowEngine | None = None
    client = ProviderClient(
        transport,
        AdmissionGate(rpm=None, tpm=None, concurrency=2),
        cache,
        Retry(max_attempts=2),
        stats,
        stopping=lambda: engine is not None and engine.stopping,
    )
    engine = small_engine(step, client, stats)
    return engine


def small_engine(step: Any, client: ProviderClient, stats: RunStats) -> RowEngine:
    """An engine for one step on one client ("p"), 4 rows in flight, rows keyed by `id`."""
    return RowEngine(
        [step],
        {"p": client},
        stats,
        RecordShape(["id"], "id", DEFAULT_ID),
        window=4,
        charges={},
        stop_after_identical_failures=10,
    )


ROW = [(0, {"id": 0, "word": "hi"})]
PIECES = ["say say hi piece 0", "say say hi piece 1", "say say hi piece 2"]


def rerun_sends(cache: DictCache) -> list[str]:
    """What a re-run of ROW over `cache` sends (everything answered at once)."""
    transport = WireTransport()
    transport.go()

    async def main() -> list[dict[str, Any]]:
        return await pieces_engine(transport, cache).process(ROW)

    records = asyncio.run(main())
    assert records[0]["c__status"] == "ok" and records[0]["c"] == " + ".join(p.upper() for p in PIECES)
    return transport.sent


@pytest.mark.parametrize("again", ["abort", "halt"])
def test_a_second_halt_does_not_drop_the_pieces_on_the_wire(again: str) -> None:
    """After the first Ctrl-C the row's task waits for its pieces on the wire; a second halt (the run
    aborting meanwhile, e.g. another row's provider refusing its key; a Ray worker's close after its halt)
    must not cancel that task again: its pieces would be dropped, paid for and sent again by a re-run."""
    cache = DictCache()

    async def main() -> tuple[list[dict[str, Any]], WireTransport]:
        transport = WireTransport()
        engine = pieces_engine(transport, cache)
        await engine.clients["p"].verify_key()  # (else the first request goes alone)
        run = asyncio.ensure_future(engine.process(ROW))
        await transport.on_the_wire(2)  # two pieces on the wire, the third waits for a slot
        engine.halt()  # the first Ctrl-C
        await asyncio.sleep(0)  # the row's task takes it: the waiting piece is dropped, it waits for the others
        if again == "abort":
            engine.set_abort(RunAborted("provider `q` refused step `other`: invalid_api_key"))
        else:
            engine.halt()
        transport.go()
        return await run, transport

    records, transport = asyncio.run(main())
    assert records == [], "the row is not finished: it stays to do"
    assert transport.dropped == [], "no request on the wire was dropped"
    assert sorted(transport.sent) == PIECES[:2] and sorted(transport.answered) == PIECES[:2]
    assert rerun_sends(cache) == PIECES[2:], "the re-run sends only the piece never sent"


def test_a_piece_granted_its_slot_as_the_stop_begins_is_not_sent() -> None:
    """The stop (a Ctrl-C) lands in the loop turn in which a piece's answer frees a slot: the piece that
    waited for it is handed the slot before the row's task can cancel it. It must not go on the wire."""
    cache = HookedCache()

    async def main() -> WireTransport:
        transport = WireTransport()
        engine = pieces_engine(transport, cache)
        loop = asyncio.get_running_loop()
        await engine.clients["p"].verify_key()
        run = asyncio.ensure_future(engine.process(ROW))
        await transport.on_the_wire(2)
        stopped = asyncio.Event()

        def ctrl_c() -> None:  # as the executor's signal handler: a callback between two loop steps
            engine.halt()
            stopped.set()

        # the Ctrl-C's handler runs as the first answer is stored: before the freed slot's new holder
        cache.on_store = lambda key: loop.call_soon(ctrl_c)
        transport.go(transport.sent[0])
        await stopped.wait()
        transport.go()
        assert await run == []
        cache.on_store = None
        return transport

    transport = asyncio.run(main())
    assert transport.dropped == []
    assert len(transport.sent) == 2, f"nothing is sent after the stop began: {transport.sent}"
    assert sorted(transport.answered) == sorted(transport.sent)
    never = sorted(set(PIECES) - set(transport.sent))
    assert rerun_sends(cache) == never, "the re-run sends only the piece never sent"


class DownloadRuntime(CompletionRuntime):
    """A kind whose row's request is a GET of an absolute URL (as a generated image's download)."""

    def prepare(self, row: Mapping[str, Any]) -> Prepared:
        url = f"https://cdn.example/{row['word']}.png"
        return Prepared(HttpRequest(url, method="GET"), 0, f"GET {url}")

    def parse(self, body: bytes) -> Parsed:
        return Parsed({"c": body.decode(), "c__finish_reason": None}, None)


def test_a_download_on_the_wire_is_let_finish_at_a_graceful_stop() -> None:
    """A generated image's download is a request on the wire too: the image was paid for, and its URL
    may have expired by the time a re-run would fetch it again."""
    step = DownloadRuntime(
        CompletionStep(name="c", kind="completion", provider="p", model="m", prompt="{{ row.word }}"),
        "ns",
        counter("heuristic"),
    )
    cache = DictCache()

    async def main() -> tuple[list[dict[str, Any]], WireTransport]:
        transport = WireTransport()
        engine = stopping_engine(step, transport, cache)
        run = asyncio.ensure_future(engine.process([(0, {"id": 0, "word": "cat"}), (1, {"id": 1, "word": "dog"})]))
        await transport.on_the_wire(2)
        engine.halt()
        transport.go()
        return await run, transport

    records, transport = asyncio.run(main())
    assert transport.dropped == [] and len(transport.answered) == 2
    assert sorted(r["c"] for r in records) == ["https://cdn.example/cat.png", "https://cdn.example/dog.png"]
    assert set(cache.entries) == {"GET https://cdn.example/cat.png", "GET https://cdn.example/dog.png"}
