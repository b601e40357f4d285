"""`pipeline models` and `validate`'s model check: the provider's list, its cache, the closest names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.job.model import Provider
from pipeline.job.profiles import resolve_provider
from pipeline.models import ModelInfo, ModelList, ModelListCache, closest, unknown_model_warning

from .conftest import SIM_KEY_ENV
from .test_label import job_file

runner = CliRunner()
DAY = 24 * 3600


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def model_gets(sim: Any) -> int:
    return sum(1 for r in sim.records if r.path == "/v1/models")


def test_closest_names() -> None:
    ids = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small", "dall-e-3"]
    assert closest("gpt-4o-mnii", ids)[0] == "gpt-4o-mini"
    assert closest("GPT-4O-MINI", ids)[0] == "gpt-4o-mini"
    assert closest("text-embeding-3-small", ids) == ["text-embedding-3-small"]
    assert closest("llama-3-70b", ids) == []
    listed = ModelList((ModelInfo("gpt-4o-mini"), ModelInfo("gpt-4o")), "http://x/v1/models")
    assert unknown_model_warning("s", "gpt-4o", "p", listed) is None
    w = unknown_model_warning("s", "gpt4o-mini", "p", listed)
    assert w is not None and "step `s`" in w and "closest: gpt-4o-mini" in w
    assert unknown_model_warning("s", "x", "p", ModelList(None, "http://x/v1/models", 404)) is None


def test_model_list_cache_ttl(tmp_path: Path) -> None:
    p = resolve_provider("local", {"local": Provider(base_url="http://127.0.0.1:9/v1")})
    cache = ModelListCache(tmp_path)
    listed = ModelList((ModelInfo("m1", "me", 1700000000), ModelInfo("m2")), "http://127.0.0.1:9/v1/models")
    assert cache.get(p, 1000.0) is None
    cache.put(p, listed, 1000.0)
    assert cache.get(p, 1000.0 + DAY - 1) == listed
    assert cache.get(p, 1000.0 + DAY) is None  # stale after 24 h
    assert cache.get(p, 999.0) is None  # written "in the future": not trusted
    none = ModelList(None, "http://127.0.0.1:9/v1/models", 404)
    cache.put(p, none, 1000.0)
    assert cache.get(p, 1001.0) == none  # "lists no models" is remembered too
    other = resolve_provider("local", {"local": Provider(base_url="http://127.0.0.1:10/v1")})
    assert cache.get(other, 1001.0) is None  # one file per address
    for f in (tmp_path / "models").iterdir():
        f.write_text("{not json")
    assert cache.get(p, 1001.0) is None
    assert ModelListCache(None).get(p, 1001.0) is None


def test_validate_warns_on_an_unlisted_model_once_per_provider(tmp_path: Path, sim: Any) -> None:
    steps = [
        {"name": "a", "model": "gpt-4o-mnii", "messages": [{"role": "user", "content": "{{ row.text }}"}]},
        {"name": "b", "messages": [{"role": "user", "content": "{{ row.text }}"}]},
    ]
    job = job_file(tmp_path, sim.url, steps, rows=2)
    res = cli("validate", str(job))
    assert res.exit_code == 0, res.output  # a warning, not a failure
    text = flat(res.output)
    assert "step `a`: model 'gpt-4o-mnii' is not in the models `local` lists" in text
    assert "closest: gpt-4o-mini" in text and "step `b`" not in text
    assert [r.path for r in sim.records] == ["/v1/models"]  # one GET for two steps, no request
    # a second validate reads the cached list; --offline too
    assert "closest: gpt-4o-mini" in flat(cli("validate", str(job)).output)
    assert "closest: gpt-4o-mini" in flat(cli("validate", str(job), "--offline").output)
    assert model_gets(sim) == 1
    assert list((tmp_path / "cache" / "models").glob("*.json"))


def test_validate_offline_without_a_cached_list_sends_nothing(tmp_path: Path, sim: Any) -> None:
    steps = [{"name": "a", "model": "gpt-4o-mnii", "messages": [{"role": "user", "content": "{{ row.text }}"}]}]
    res = cli("validate", str(job_file(tmp_path, sim.url, steps, rows=2)), "--offline")
    assert res.exit_code == 0 and "not checked (--offline" in flat(res.output) and "closest" not in res.output
    assert sim.records == []


def test_validate_without_a_key_does_not_ask(tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIM_KEY_ENV)
    steps = [{"name": "a", "messages": [{"role": "user", "content": "{{ row.text }}"}]}]
    res = cli("validate", str(job_file(tmp_path, sim.url, steps, rows=2)))
    assert res.exit_code == 0 and f"not checked: {SIM_KEY_ENV} is not set" in flat(res.output)
    assert sim.records == []


def test_validate_on_a_keyless_server_without_a_model_list(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(require_key=False, models_list=False)
    steps = [{"name": "a", "model": "anything", "messages": [{"role": "user", "content": "{{ row.text }}"}]}]
    job = job_file(tmp_path, sim.url, steps, rows=2)
    spec = yaml.safe_load(job.read_text())
    del spec["providers"]["local"]["api_key_env"]
    job.write_text(yaml.safe_dump(spec))
    for _ in range(2):
        res = cli("validate", str(job))
        assert res.exit_code == 0, res.output
        assert "lists no models (HTTP 404)" in flat(res.output) and "warning" not in res.output
    assert [(r.path, r.key) for r in sim.records] == [("/v1/models", "")]  # keyless, and asked once


def test_validate_when_the_model_list_fails(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(keys={"another-key": {}})  # the job's key is refused: 401 on GET /models
    steps = [{"name": "a", "messages": [{"role": "user", "content": "{{ row.text }}"}]}]
    res = cli("validate", str(job_file(tmp_path, sim.url, steps, rows=2)))
    assert res.exit_code == 0, res.output
    assert "not checked: GET /models failed" in flat(res.output) and "test-key" not in res.output
    assert model_gets(sim) == 1


def test_models_table_and_json(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(models=["gpt-4o-mini", "dall-e-3"])
    job = job_file(tmp_path, sim.url, [{"name": "a", "messages": [{"role": "user", "content": "x"}]}], rows=1)
    res = cli("models", "--job", str(job), "--provider", "local")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if "gpt-4o-mini" in line or "dall-e-3" in line]
    assert len(lines) == 2 and all(" openai " in line and "20" in line for line in lines)
    assert "owner" in res.output and "created" in res.output
    res = cli("models", "--job", str(job), "--provider", "local", "--json")
    data = json.loads(res.stdout)
    assert [m["id"] for m in data] == ["dall-e-3", "gpt-4o-mini"]
    assert all(set(m) == {"id", "owned_by", "created"} and isinstance(m["created"], int) for m in data)
