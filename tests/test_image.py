"""The `image` kind (/images/generations): files beside the output, their list in the row, re-runs and
resumes from the cache, URL downloads retried, failures per row, the ipm limit held by the gate."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import diskcache
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.endpoints.image import file_stem, sniff
from pipeline.errors import JobError
from pipeline.plan import build_plan
from pipeline.sim import FaultRule, KeyLimits
from pipeline.sim import images as simi

from .conftest import SIM_KEY_ENV, run_job, take_over_logs

ROOT = Path(__file__).resolve().parents[1]
IDS = ["p/1", "p_1", "a b", "x.y", "id-5", "..", "id-7", "id-8"]


def write_job(
    tmp_path: Path,
    url: str,
    *,
    model: str = "dall-e-2",
    params: str = "{size: 256x256, n: 2}",
    limits: str = "{rpm: 100000, concurrency: 8}",
    ids: list[str] | None = None,
) -> Path:
    rows = ids or IDS
    pl.DataFrame({"pid": rows, "subject": [f"a lamp number {i}" for i in range(len(rows))]}).write_csv(
        tmp_path / "products.csv"
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        textwrap.dedent(f"""\
        version: 1
        name: pictures
        providers:
          local: {{base_url: {url}, api_key_env: {SIM_KEY_ENV}, limits: {limits}}}
        input: {{path: {tmp_path / "products.csv"}, id: pid}}
        steps:
          - name: pic
            kind: image
            provider: local
            model: {model}
            prompt: "A product photo of {{{{ row.subject }}}}"
            params: {params}
        output: {{path: {tmp_path / "out" / "shots.parquet"}}}
        cache: {{dir: {tmp_path / "cache"}}}
        retry: {{max_attempts: 4, backoff_base_s: 0.01, backoff_cap_s: 0.02}}
        """)
    )
    return job


def expected_png(subject: str, i: int, model: str = "dall-e-2", size: str = "256x256") -> bytes:
    req = simi.parse(
        {
            "model": model,
            "prompt": f"A product photo of {subject}",
            "size": size,
            "response_format": "b64_json",
            **({"n": 2} if model == "dall-e-2" else {}),
        }
    )
    return simi.png(req.image_id(i))


def gens(sim: Any) -> list[Any]:
    return [r for r in sim.records if r.path.endswith("/images/generations")]


def check_rows(df: pl.DataFrame, tmp_path: Path, n: int = 2) -> None:
    folder = tmp_path / "out" / "shots_images"
    for row in df.iter_rows(named=True):
        assert row["pic__status"] == "ok", row["pic__error"]
        assert len(row["pic"]) == n
        for i, im in enumerate(row["pic"]):
            path = Path(im["path"])
            assert path.parent == folder and path.name.startswith(file_stem(row["pid"]) + f"_{i}.")
            data = path.read_bytes()
            assert data == expected_png(row["subject"], i), "each row's images are its own"
            assert im["bytes"] == len(data) and im["mime"] == "image/png" and path.suffix == ".png"
    paths = [im["path"] for row in df["pic"] for im in row]
    assert len(set(paths)) == len(paths) == sorted(p.name for p in folder.iterdir()).__len__()


@pytest.mark.parametrize("fmt", ["url", "b64_json"])
def test_each_rows_images_land_where_the_parquet_says_and_a_rerun_sends_nothing(
    tmp_path: Path, sim_factory: Any, fmt: str
) -> None:
    sim = sim_factory(image_download_failures=1 if fmt == "url" else 0)
    job = write_job(tmp_path, sim.url, params=f"{{size: 256x256, n: 2, response_format: {fmt}}}")
    summary = run_job(job)
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert df.schema["pic"] == pl.List(
        pl.Struct({"path": pl.String, "bytes": pl.Int64, "mime": pl.String, "revised_prompt": pl.String})
    )
    check_rows(df, tmp_path)
    assert len(gens(sim)) == 8
    downloads = sim.sim.image_downloads()
    if fmt == "url":  # each URL answered 503 once first: downloads are retried like any request
        assert len(downloads) == 16 and set(downloads.values()) == {2} and summary.stats.retries == 16
    else:
        assert downloads == {}
    for f in (tmp_path / "out" / "shots_images").iterdir():
        f.unlink()
    before = len(sim.records)
    again = run_job(job, fresh=True)
    assert len(sim.records) == before and again.stats.requests == 0, "the files are written from the cache"
    assert sim.sim.image_downloads() == downloads
    check_rows(pl.read_parquet(tmp_path / "out" / "shots.parquet"), tmp_path)


def test_dalle3_revised_prompt_and_gpt_image_b64(tmp_path: Path, sim: Any) -> None:
    job = write_job(
        tmp_path, sim.url, model="dall-e-3", params="{size: 1024x1024, quality: hd, style: natural}", ids=["a", "b"]
    )
    run_job(job)
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert set(df["pic__status"]) == {"ok"}
    for row in df.iter_rows(named=True):
        (im,) = row["pic"]
        assert im["revised_prompt"] == f"A detailed picture of A product photo of {row['subject']}"


def test_failures_stay_per_row(tmp_path: Path, sim: Any) -> None:
    sim.set_faults(
        [FaultRule(kind="status", status=400, error_type="invalid_request_error", when_contains='lamp number 3"')]
    )
    job = write_job(tmp_path, sim.url)
    summary = run_job(job)
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    bad = df.filter(pl.col("subject") == "a lamp number 3").row(0, named=True)
    assert bad["pic__status"] == "error" and "HTTP 400" in bad["pic__error"] and bad["pic"] is None
    assert not list((tmp_path / "out" / "shots_images").glob(file_stem(bad["pid"]) + "_*"))
    check_rows(df.filter(pl.col("pic__status") == "ok"), tmp_path)
    assert summary.failed_rows == 1 and df.filter(pl.col("pic__status") == "ok").height == 7


def test_per_model_params_are_checked_before_any_request(tmp_path: Path) -> None:
    for model, params, needle in [
        ("dall-e-3", "{size: 256x256}", "params.size '256x256' is not one dall-e-3 makes"),
        ("dall-e-2", "{style: vivid}", "params.style applies to dall-e-3 only"),
        ("dall-e-3", "{n: 2}", "dall-e-3 makes one image per request"),
        ("gpt-image-1", "{response_format: url}", "gpt-image-1 always answers b64_json"),
        ("dall-e-2", "{background: transparent}", "params.background applies to gpt-image-1 only"),
        ("dall-e-2", "{sise: 256x256}", "did you mean `size`"),
    ]:
        job = write_job(tmp_path, "http://127.0.0.1:9", model=model, params=params)
        with pytest.raises(JobError) as exc:
            build_plan(job)
        assert needle in str(exc.value), str(exc.value)


def test_ipm_is_held_by_the_gate_in_images(tmp_path: Path, sim_factory: Any) -> None:
    # The job allows 3 images per 0.5 s (rpm unlimited); each request asks for 2 images, so the gate lets
    # one request in per window: 9 requests cannot start within less than 8 windows. (Were requests
    # counted instead of images, 3 would go per window.) Only a lower bound on time is asserted: a busy
    # machine makes the run slower, never faster. The simulator enforces twice the job's limit, so jitter
    # between our clock and its own cannot cause a 429, and none may come.
    sim = sim_factory(default_limits=KeyLimits(ipm=6), window_s=0.5)
    job = write_job(tmp_path, sim.url, limits="{ipm: 3, period_s: 0.5}", ids=[f"r{i}" for i in range(9)])
    summary = run_job(job)
    starts = sorted(r.t_start for r in gens(sim))
    assert [r.status for r in gens(sim)] == [200] * 9 and summary.stats.rate_limited == 0
    assert starts[-1] - starts[0] >= 8 * 0.5 * 0.95, "one request of 2 images per 0.5 s window"
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert set(df["pic__status"]) == {"ok"}


def test_ipm_and_tpm_together_are_refused(tmp_path: Path) -> None:
    job = write_job(tmp_path, "http://127.0.0.1:9", limits="{ipm: 6, tpm: 1000}")
    with pytest.raises(JobError) as exc:
        build_plan(job)
    assert "ipm" in str(exc.value) and "tpm" in str(exc.value)


def test_names_are_sanitised_unique_and_mime_sniffed() -> None:
    stems = [file_stem(i) for i in IDS]
    assert len(set(stems)) == len(stems)
    assert all("/" not in s and " " not in s and not s.startswith(".") for s in stems)
    assert file_stem("id-5") == "id-5"
    assert sniff(b"\x89PNG\r\n\x1a\n...") == "image/png" and sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"


@pytest.mark.slow
def test_kill_9_resume_resends_nothing_answered(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(latency_s=0.05)
    ids = [f"row{i:03d}" for i in range(120)]
    job = write_job(
        tmp_path,
        sim.url,
        params="{size: 256x256, n: 1, response_format: url}",
        limits="{rpm: 100000, concurrency: 4}",
        ids=ids,
    )
    env = {**os.environ, SIM_KEY_ENV: "test-key"}

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(job), "--quiet"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    proc = spawn()
    deadline = time.monotonic() + 30
    while sum(sim.sim.image_downloads().values()) < 20:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not get going"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # what the client stored (read from its cache): generation answers (their image URLs) and images
    take_over_logs(tmp_path / "cache")
    with diskcache.Cache(str(tmp_path / "cache")) as dc:
        bodies = [b for b in (dc.get(k) for k in dc.iterkeys()) if isinstance(b, bytes)]
    stored_files = {Path(d["url"]).name for b in bodies if b[:1] == b"{" for d in json.loads(b)["data"]}
    stored_images = {b for b in bodies if b[:1] != b"{"}
    assert len(stored_images) > 0 and 0 < len(stored_files) < 120
    before, fetched = len(sim.records), sim.sim.image_downloads()
    proc = spawn()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    later = sim.records[before:]
    fetched_later = {k: v - fetched.get(k, 0) for k, v in sim.sim.image_downloads().items()}

    def image_file(prompt: str) -> str:
        req = simi.parse({"model": "dall-e-2", "prompt": prompt, "size": "256x256", "response_format": "url"})
        return f"{req.image_id(0)}.png"

    regenerated = [
        r
        for r in later
        if r.path.endswith("/images/generations") and r.body and image_file(r.body["prompt"]) in stored_files
    ]
    assert regenerated == [], f"{len(regenerated)} answered generations were sent again"
    refetched = [name for name, k in fetched_later.items() if k and simi.png(Path(name).stem) in stored_images]
    assert refetched == [], f"{len(refetched)} stored images were downloaded again"
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert df.height == 120 and set(df["pic__status"]) == {"ok"}
    for row in df.iter_rows(named=True):
        assert Path(row["pic"][0]["path"]).read_bytes() == simi.png(
            Path(image_file(f"A product photo of {row['subject']}")).stem
        )


def test_sample_job_runs_with_every_row_ok(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    spec = yaml.safe_load((ROOT / "jobs" / "generate_images.yaml").read_text())
    spec["cache"] = {"dir": str(tmp_path / "cache")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", "job.yaml", "--sim", "--sim-latency", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(tmp_path / spec["output"]["path"])
    assert set(df[f"{spec['steps'][0]['name']}__status"]) == {"ok"}
    for images in df[spec["steps"][0]["name"]]:
        for im in images:
            assert Path(im["path"]).is_file() and im["mime"] == "image/png"


def test_estimate_counts_images_against_ipm(tmp_path: Path) -> None:
    from pipeline.estimate import estimate

    job = write_job(tmp_path, "http://127.0.0.1:9", limits="{ipm: 8, rpm: 1000}")  # 8 rows of 2 images
    est = estimate(build_plan(job))
    assert est.binding_limit["local"] == "images/min"
    assert est.minutes_by_provider["local"] == pytest.approx(2.0 * 7 / 8)  # the first request's 2 go at once


def test_images_are_priced_per_image_in_rows_run_estimate_and_budget(tmp_path: Path, sim: Any) -> None:
    """An image step is billed per image: its rows, the run's spend (live cost, summary, budget) and
    `estimate` all count n images per request at the table's `image` price."""
    from pipeline.estimate import estimate

    job = write_job(tmp_path, sim.url)  # 8 rows of 2 images
    job.write_text(job.read_text() + "prices: {dall-e-2: {image: 0.5}}\n")
    plan = build_plan(job)
    est = estimate(plan, plan.prices).steps[0]
    assert (est.requests, est.images, est.prompt_tokens) == (8, 16, 0)
    assert est.cost == pytest.approx(8.0)

    # a budget of 2.5: each request holds its 2 images (1.0); the third cannot fit beside two answered
    res = CliRunner().invoke(app, ["run", str(job), "--max-cost", "2.5"])
    assert res.exit_code == 4, res.output
    assert len(gens(sim)) == 2  # spend never crosses the budget
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert df.filter(pl.col("pic__status") == "ok").height == 2
    assert df["pic__cost"].sum() == pytest.approx(2.0)

    summary = run_job(job)  # no budget: the rest are sent, each row and the run priced per image
    assert len(gens(sim)) == 8
    assert summary.cost_usd == pytest.approx(6.0) and summary.cost_total_usd == pytest.approx(8.0)
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert set(df["pic__status"]) == {"ok"} and df["pic__cost"].sum() == pytest.approx(8.0)


def test_a_budget_on_an_image_step_needs_its_image_price(tmp_path: Path) -> None:
    job = write_job(tmp_path, "http://127.0.0.1:9")
    job.write_text(job.read_text() + "prices: {dall-e-2: {input: 1, output: 1}}\nbudget: {max_cost_usd: 1}\n")
    res = CliRunner().invoke(app, ["run", str(job)])
    assert res.exit_code == 2 and "model dall-e-2: image" in res.output, res.output


def test_an_ipm_provider_describes_its_limit_in_images(tmp_path: Path, sim_factory: Any) -> None:
    sim = sim_factory(default_limits=KeyLimits(ipm=60), window_s=0.5)
    job = write_job(tmp_path, sim.url, limits="{ipm: 30, period_s: 0.5}", ids=[f"r{i}" for i in range(20)])
    stats = run_job(job).limits["local"]
    line = stats.describe()
    assert "ipm 30" in line and "tpm" not in line and "tokens/min" not in line, line
    # the binding limit, named in images whichever one a busy machine made admissions wait on longest
    assert dataclasses.replace(stats, binding="tokens/min").describe().startswith("binding: images/min")


def test_downloads_are_not_api_calls_and_an_expired_url_fails_its_row_only(tmp_path: Path, sim_factory: Any) -> None:
    # A URL answer's images are fetched outside the provider's admission: they take none of its
    # requests/min (an image model's low rpm would otherwise go half to downloads) and are counted apart.
    # Each URL first answers 403 (an expired signed URL): that fails the row, not the run (no key is
    # sent to it: a 403 says nothing of the key), and a re-run of the failed rows fetches again without
    # generating again. (Before: downloads took admissions, and the 403 stopped the run as a bad key.)
    sim = sim_factory(image_download_failures=1, image_download_status=403)
    job = write_job(tmp_path, sim.url, params="{size: 256x256, n: 2, response_format: url}")
    summary = run_job(job)
    assert len(gens(sim)) == 8 and summary.stats.requests == 8
    assert 8 <= summary.stats.downloads <= 16 and summary.stats.retries == 0
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert set(df["pic__status"]) == {"error"} and summary.failed_rows == 8
    assert all("downloading image" in e and "403" in e for e in df["pic__error"])
    again = run_job(job, retry_failed=True)
    assert len(gens(sim)) == 8 and again.stats.requests == 0, "the generations come from the cache"
    assert again.stats.downloads == 16
    df = pl.read_parquet(tmp_path / "out" / "shots.parquet")
    assert set(df["pic__status"]) == {"ok"}
    check_rows(df, tmp_path)
