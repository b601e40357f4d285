"""`pipeline run --backend ray` without Ray, and its options without the backend (no Ray needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

from .conftest import write_job


def test_without_ray_the_backend_names_the_extra(tmp_path: Path, sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    job = write_job(tmp_path, sim.url, rows=5)
    res = CliRunner().invoke(app, ["run", str(job), "--backend", "ray", "-q"])
    assert res.exit_code == 2
    assert "pip install 'pipeline[ray]'" in res.output
    assert sim.records == []


def test_ray_options_need_the_ray_backend(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=5)
    res = CliRunner().invoke(app, ["run", str(job), "--workers", "4", "-q"])
    assert res.exit_code == 2 and "--backend ray" in res.output
