"""Job file loading: validation messages name the file, line, key and a fix; schema stays in sync."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline.errors import JobError
from pipeline.job.load import load_job
from pipeline.job.model import job_json_schema
from pipeline.job.profiles import resolve_provider

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
version: 1
name: t
input: {path: data.csv}
steps:
  - name: s
    kind: chat
    provider: sim
    model: gpt-4o-mini
    messages: [{role: user, content: "{{ row.text }}"}]
output: {path: out.parquet}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_schema_file_in_sync() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from gen_schema import TARGET, render

    assert TARGET.read_text() == render(), "run `python scripts/gen_schema.py` and commit schemas/job.schema.json"


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_job_validates(job: Path) -> None:
    import jsonschema
    import yaml

    load_job(job)
    jsonschema.validate(yaml.safe_load(job.read_text()), job_json_schema())


def test_good_job_loads(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, GOOD)).spec
    assert spec.steps[0].output_column == "s"
    assert spec.cache.enabled and spec.retry.max_attempts == 6


def test_unknown_key_has_hint_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("model: gpt-4o-mini", "modle: gpt-4o-mini"))
    with pytest.raises(JobError) as e:
        load_job(p)
    msg = str(e.value)
    assert f"{p}:8" in msg and "unknown key `modle`" in msg and "did you mean `model`" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"unknown key `ouput`.*did you mean `output`"):
        load_job(write(tmp_path, GOOD + "ouput: {}\n"))


def test_yaml_syntax_error_shows_line(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("input: {path: data.csv}", "input: {path: data.csv"))
    with pytest.raises(JobError) as e:
        load_job(p)
    assert "YAML syntax error" in str(e.value) and f"{p}:4:" in str(e.value)


def test_wrong_type_names_location(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"retry.max_attempts"):
        load_job(write(tmp_path, GOOD + "retry: {max_attempts: lots}\n"))


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="kind"):
        load_job(write(tmp_path, GOOD.replace("kind: chat", "kind: chatt")))


def test_version_checked(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="version 2 is not supported"):
        load_job(write(tmp_path, GOOD.replace("version: 1", "version: 2")))


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")


def test_duplicate_step_names(tmp_path: Path) -> None:
    text = GOOD.replace(
        "output: {path",
        """  - name: s
    kind: chat
    provider: sim
    model: m
    output: other
    messages: [{role: user, content: hi}]
output: {path""",
    )
    with pytest.raises(JobError, match="two steps are named 's'"):
        load_job(write(tmp_path, text))


def test_profile_override_merges_limits(tmp_path: Path) -> None:
    spec = load_job(write(tmp_path, GOOD + "providers:\n  apiyi:\n    limits: {rpm: 10}\n")).spec
    p = resolve_provider("apiyi", spec.providers)
    assert p.limits.rpm == 10 and p.limits.tpm == 1_000_000 and p.limits.concurrency == 100
    assert p.base_urls == ("https://api.apiyi.com/v1", "https://vip.apiyi.com/v1")


def test_unknown_provider() -> None:
    with pytest.raises(
        JobError,
        match="unknown provider 'nope'; known providers: apiyi, infinity, litellm, llamacpp, ollama, openai, sim, vllm",
    ):
        resolve_provider("nope", {})


def test_schema_is_json() -> None:
    json.dumps(job_json_schema())
