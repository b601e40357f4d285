"""Regenerate schemas/job.schema.json from the pydantic job model (a test keeps them in sync)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.job.model import job_json_schema  # noqa: E402

TARGET = ROOT / "schemas" / "job.schema.json"


def render() -> str:
    return json.dumps(job_json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
