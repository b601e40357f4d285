"""The Ray backend: the same job on a Ray cluster, under one global limiter per provider key.

Ray is an optional extra (`pip install 'pipeline[ray]'`); it is imported only when this backend runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..executor import RunOptions, RunSummary
from ..plan import build_plan
from ..records import Progress
from .driver import EXTRA_HINT, RayExecutor, RayOptions, execute_on_ray, import_ray

__all__ = ["EXTRA_HINT", "RayExecutor", "RayOptions", "execute_on_ray", "import_ray", "run_on_ray"]


def run_on_ray(
    job: str | Path,
    *,
    address: str | None = None,
    workers: int = 2,
    options: RunOptions | None = None,
    observer: Callable[[Progress], None] | None = None,
    sim_url: str | None = None,
    prices_file: Path | None = None,
) -> RunSummary:
    """`pipeline run JOB --backend ray` from Python: build the plan here, run its rows on Ray."""
    import_ray()
    plan = build_plan(job, sim_url=sim_url, prices_file=prices_file)
    ray_options = RayOptions(address=address, workers=workers)
    return asyncio.run(execute_on_ray(plan, options, observer, ray_options, sim_url=sim_url, prices_file=prices_file))
