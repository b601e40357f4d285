"""The `pipeline` command: the only place that prints, sets up logging or picks exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from . import __version__
from .errors import DiskError, JobError, PipelineError, RunAborted
from .logs import KeyMask, json_log
from .records import Progress as RunProgress

if TYPE_CHECKING:
    from rich.table import Table

EXIT_OK, EXIT_FAILED_ROWS, EXIT_BAD_JOB, EXIT_ABORTED, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

app = typer.Typer(
    help="Batch jobs against OpenAI-compatible APIs: YAML in, rate-limited requests, Parquet out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="The response cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


class _LazyConsole:
    """A rich Console made at its first use: rich's console, text and colour modules (~30 ms of imports)
    are not on the way to a run's first request."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Any = None

    def real(self) -> Any:
        """The rich Console itself (made now if not yet), for what takes a Console and not its methods:
        rich's live display enters it as a context manager, which this wrapper cannot pass on."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
            if not self._console.is_terminal and "COLUMNS" not in os.environ:
                # piped or logged: rich's default of 80 columns cut the tables' headers and names
                # ("reques…", "embedd…"); a log has no width to keep to
                self._console.width = 160
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _seconds(s: float) -> str:
    """A duration in seconds, to a tenth below 10 s ("0.4 s", not "0 s")."""
    return f"{s:,.1f} s" if s < 10 else f"{s:,.0f} s"


def escape(markup: str) -> str:
    """rich.markup.escape, imported when first needed."""
    from rich.markup import escape as rich_escape

    return rich_escape(markup)


out: Any = _LazyConsole()
err: Any = _LazyConsole(stderr=True)


def _run_async(coro: Any) -> Any:
    """Run on uvloop where it is installed (Linux, macOS): it halves the cost of socket I/O."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _fail(message: str, code: int = EXIT_BAD_JOB) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _simulator(plan_job: Path, latency_s: float) -> Iterator[str]:
    """An in-process simulator enforcing each provider's limits, for `run --sim`."""
    from .job.load import load_job
    from .job.profiles import resolve_provider
    from .sim import KeyLimits, SimConfig, SimulatorThread

    spec = load_job(plan_job).spec
    keys: dict[str, KeyLimits] = {}
    period = 60.0
    for step in spec.steps:
        try:
            p = resolve_provider(step.provider, spec.providers)
        except JobError:
            continue  # reported by the plan with the other problems
        keys[f"sim-{step.provider}"] = KeyLimits(
            rpm=p.limits.fixed("rpm"), tpm=p.limits.fixed("tpm"), concurrency=p.limits.concurrency
        )
        period = p.limits.period_s
    sim = SimulatorThread(SimConfig(keys=keys or None, window_s=period, latency_s=latency_s, jitter=0.3))
    url = sim.start()
    try:
        yield url
    finally:
        sim.stop()


class _ConsoleWarnings(logging.Handler):
    """Warnings the run logs (a server refusing a structured-output form, streams turned off) shown once
    each on stderr, above the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == record.msg:
            return  # a bare event (logs.event): for --log, the terminal has the progress line and summary
        err.print(f"[yellow]warning[/]: {escape(record.getMessage())}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _warnings_shown() -> Iterator[None]:
    logger = logging.getLogger("pipeline")
    handler = _ConsoleWarnings(logging.WARNING)
    handler.addFilter(KeyMask())
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _ProgressView:
    """Rich progress bar on a terminal; a line every 10 s otherwise (logs, CI)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.quiet = quiet
        self.live = not quiet and err.is_terminal
        self._last_line = 0.0
        if not self.live:  # (rich.progress is loaded only for a live bar)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]rows"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err.real(),  # (the Console: the live bar enters it, which the lazy wrapper cannot pass on)
            transient=False,
            refresh_per_second=2,  # a redraw costs CPU: twice a second is enough for a long batch job
        )
        self.task = self.bar.add_task("rows", total=total, info="")

    def __enter__(self) -> _ProgressView:
        if self.live:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.bar.stop()

    def __call__(self, p: RunProgress) -> None:
        if self.quiet:
            return
        info = (
            f"{p.req_per_min:,.0f} req/min  {p.tok_per_min:,.0f} tok/min  cache {p.cache_hits:,}  "
            f"err {p.rows_failed:,}  429 {p.rate_limited:,}"
        )
        if p.audio_s_done is not None:
            left = "" if p.audio_s_left is None else f", ~{p.audio_s_left / 60:,.0f} left"
            info += f"  audio {p.audio_s_done / 60:,.1f} min done{left}"
        if p.cost_usd is not None:
            info += f"  ${p.cost_usd:,.4f}" + (f" of ${p.budget_usd:,.2f}" if p.budget_usd is not None else "")
        if self.live:
            self.bar.update(self.task, completed=p.rows_done, info=info)
        elif not self.quiet and time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            limits = f"  ({p.limits})" if p.limits else ""
            err.print(f"rows {p.rows_done:,}/{p.total_rows:,}  {info}{limits}", highlight=False)


_STATUSES = ("ok", "error", "invalid", "skipped")


def _summary_table(summary: Any) -> Table:
    """The whole output's rows by status (earlier runs' rows included), and what this run did."""
    from rich.table import Table

    t = Table(title=f"output: {summary.output}", show_header=True, header_style="bold")
    t.add_column("step")
    for s in _STATUSES:
        t.add_column(s, justify="right")
    t.add_column("not done", justify="right")
    t.add_column("this run", justify="left")
    for step, counts in summary.status_counts.items():
        whole = summary.output_counts.get(step) or {}
        not_done = summary.total_rows - sum(whole.values())
        this_run = ", ".join(f"{n:,} {s}" for s in _STATUSES if (n := counts.get(s, 0))) or "nothing to do"
        t.add_row(step, *(f"{whole.get(s, 0):,}" for s in _STATUSES), f"{max(0, not_done):,}", this_run)
    return t


@app.command()
def run(
    job: Path = typer.Argument(..., help="the job file (YAML)"),
    sim: bool = typer.Option(False, "--sim", help="point every provider at an in-process simulator"),
    sim_latency: float = typer.Option(0.05, help="with --sim: seconds per simulated request"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore earlier progress of this job and start over"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="redo rows that failed in earlier runs"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    max_cost: float | None = typer.Option(
        None,
        "--max-cost",
        min=0.0,
        help="USD: send nothing that could take the job's cost over this "
        "(over the job's `budget:`); a later run with a higher budget continues",
    ),
    prices: Path | None = typer.Option(None, help="a YAML/JSON price table over the shipped one and the job's"),
    log_file: Path | None = typer.Option(
        None,
        "--log",
        help="append the run's events (retries, 429s, failovers, learned limits, aborts, totals) "
        "to this file as JSON lines; keys are masked",
    ),
    backend: str = typer.Option("local", help="local: this process; ray: worker actors on a Ray cluster"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="with --backend ray: `auto` or ray://host:10001 (default: a local Ray)"
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="with --backend ray: worker actors (default 2)"),
) -> None:
    """Run a job: every row through every step; results to the output Parquet file."""
    if backend not in ("local", "ray"):
        raise _fail(f"--backend {backend} is not a backend; choose local or ray")
    if backend == "local" and (ray_address is not None or workers is not None):
        raise _fail("--ray-address and --workers go with --backend ray")
    stack = contextlib.ExitStack()
    # No collection while the modules are imported and the plan is made: what they make lives for the
    # whole run and is frozen below (a full pass over the imports cost ~30 ms of start-up, ~2.7% of a
    # one-row run's instructions; ~700 unreachable objects are frozen with the rest instead)
    gc.disable()
    try:
        from .executor import RunOptions, execute
        from .plan import build_plan

        if backend == "ray":
            from .raybackend import import_ray

            import_ray()
        else:
            from .sinks import skip_pandas_probe

            skip_pandas_probe()  # this process never hands pyarrow pandas objects: ~0.25 s, ~28 MB saved
        sim_url = stack.enter_context(_simulator(job, sim_latency)) if sim else None
        plan = build_plan(job, sim_url=sim_url, prices_file=prices)
        if log_file is not None:
            stack.enter_context(json_log(log_file, secrets=plan.api_keys.values()))
        where = "the simulator" if sim else ", ".join(p.base_urls[0] for p in plan.providers.values())
        if not quiet:
            err.print(
                f"[bold]{plan.job.spec.name}[/]: {plan.total_rows:,} rows, {len(plan.steps)} step(s) "
                f"-> {plan.output}  (against {where})",
                highlight=False,
            )
            for note in plan.notes:
                err.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
        # What exists now (the imports' modules, the plan) lives for the whole run: kept out of the
        # collector's full passes, which otherwise walk it again and again (0.3 s of a 60k-row cached re-run);
        # and a young collection per 10,000 new objects, not per 700 (rows make and free many dicts each)
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        gc.enable()
        with _warnings_shown(), _ProgressView(plan.total_rows, quiet) as view:
            opts = RunOptions(fresh=fresh, retry_failed=retry_failed, max_cost_usd=max_cost)
            if backend == "ray":
                from .raybackend import RayOptions, execute_on_ray

                on_ray = RayOptions(address=ray_address, workers=workers or 2)
                coro = execute_on_ray(plan, opts, view, on_ray, sim_url=sim_url, prices_file=prices)
                summary = _run_async(coro)
            else:
                summary = _run_async(execute(plan, opts, view))
    except JobError as exc:
        raise _fail(str(exc)) from None
    except RunAborted as exc:
        raise _fail(f"run aborted: {exc}", EXIT_ABORTED) from None
    except DiskError as exc:
        raise _fail(f"disk error: {exc}: pipeline run {job}" + (" --sim" if sim else ""), EXIT_ABORTED) from None
    except PipelineError as exc:
        raise _fail(str(exc), EXIT_ABORTED) from None
    finally:
        gc.enable()  # (a job that failed before the freeze leaves the collector on too)
        stack.close()

    if not quiet:
        for note in summary.notes:
            err.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
        err.print(_summary_table(summary))
        s = summary.stats
        err.print(
            f"requests {s.requests:,}  "
            + (f"image downloads {s.downloads:,}  " if s.downloads else "")
            + f"cache hits {s.cache_hits:,}  retries {s.retries:,}  429s {s.rate_limited:,}  "
            f"tokens {s.prompt_tokens + s.completion_tokens:,}  re-asks {s.repairs:,}  "
            f"resumed rows {summary.rows_resumed:,}  "
            f"time {summary.elapsed_s:,.1f}s",
            highlight=False,
        )
        if summary.cost_usd is not None:
            err.print(
                f"cost ${summary.cost_usd:,.4f} this run, ${summary.cost_total_usd or 0:,.4f} for the job so far"
                + (f" (budget ${summary.budget_usd:,.2f})" if summary.budget_usd is not None else ""),
                highlight=False,
            )
        for name, gate in summary.limits.items():
            err.print(f"limits of {name}: {gate.describe()}", highlight=False, soft_wrap=True)
            for line in getattr(gate, "key_lines", list)():  # key pools (issue 10b): one line per key
                err.print(f"  {line}", highlight=False, soft_wrap=True)
    resume_cmd = f"pipeline run {job}" + (" --sim" if sim else "")
    if summary.aborted:
        err.print(f"[bold red]run aborted:[/] {escape(summary.aborted)}", highlight=False)
        # rows that failed before the stop are done for a plain resume: say how to send them again
        again = f"{resume_cmd} --retry-failed" if summary.failed_rows else resume_cmd
        err.print(f"finished rows are kept; fix the cause and resume with: {again}", highlight=False, soft_wrap=True)
        if summary.failed_rows:
            err.print(
                f"({summary.failed_rows:,} row(s) were marked failed; --retry-failed sends them again)", highlight=False
            )
        raise typer.Exit(EXIT_ABORTED)
    if summary.interrupted:
        err.print(
            f"[yellow]interrupted[/]: finished rows are kept. Resume with: {resume_cmd}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    err.print(f"wrote {summary.output}", highlight=False)
    if summary.budget_unsent_rows:
        err.print(
            f"[bold yellow]budget reached[/]: ${summary.cost_total_usd or 0:,.4f} of ${summary.budget_usd:,.2f} "
            f"spent; {summary.budget_unsent_rows:,} row(s) not sent (their error says BudgetReached). "
            f"Continue with: {resume_cmd} --max-cost <more USD>",
            highlight=False,
        )
        raise typer.Exit(EXIT_BUDGET)
    if summary.failed_rows:
        err.print(
            f"{summary.failed_rows:,} row(s) failed: see `pipeline inspect {summary.output}`; "
            f"redo them with `{resume_cmd} --retry-failed`",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_FAILED_ROWS)


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    """A request body for display: JSON Schemas (answer, tool parameters) shown by their size only."""

    def summary(schema: Any) -> str:
        props = schema.get("properties") if isinstance(schema, dict) else None
        return f"<JSON Schema: {len(props) if isinstance(props, dict) else 0} top-level properties>"

    out = dict(body)
    rf = out.get("response_format")
    if isinstance(rf, dict) and isinstance(rf.get("json_schema"), dict):
        js = rf["json_schema"]
        out["response_format"] = {**rf, "json_schema": {**js, "schema": summary(js.get("schema"))}}
    elif isinstance(rf, dict) and isinstance(rf.get("schema"), dict):  # json_object with the schema
        out["response_format"] = {**rf, "schema": summary(rf["schema"])}
    if isinstance(out.get("tools"), list):
        out["tools"] = [
            {**t, "function": {**t["function"], "parameters": summary(t["function"].get("parameters"))}}
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
            else t
            for t in out["tools"]
        ]
    return out


@app.command()
def validate(
    job: Path = typer.Argument(..., help="the job file (YAML)"),
    rows: int = typer.Option(3, help="render the templates on this many sample rows"),
    offline: bool = typer.Option(False, "--offline", help="do not ask the providers for their model lists"),
) -> None:
    """Check a job without sending requests: schema, input, ids, columns, templates on sample rows, and the
    steps' models against each provider's model list (one GET /models, cached for a day)."""
    from .plan import build_plan
    from .sources import ROW
    from .templating import NullValue

    try:
        plan = build_plan(job, require_keys=False)
    except JobError as exc:
        raise _fail(str(exc)) from None
    from .keypool import read_keys

    missing = [
        f"{n}: {', '.join(unset)}"
        for n, p in plan.providers.items()  # every variable of a key pool
        if (unset := read_keys(p.api_key_envs)[1]) and not (p.key_optional and plan.api_keys.get(n) is None)
    ]
    out.print(f"{job}: {plan.total_rows:,} rows, {len(plan.steps)} step(s), output {plan.output}", highlight=False)
    for step in plan.steps:
        cols = ", ".join(f"{f.name} ({f.type})" for f in step.output_fields())
        out.print(f"  step {step.name} writes: {escape(cols)}", highlight=False)
    failures: list[str] = []
    for df in plan.source.batches(rows):
        for row in df.head(rows).iter_rows(named=True):
            row.pop(ROW, None)
            for step in plan.steps:
                try:
                    prep = step.prepare(row)
                except NullValue as exc:  # data, not a mistake: the row is `skipped` in this step
                    out.print(
                        f"  row {row.get(plan.id_column, '?')!r}, step {step.name}: skipped ({exc})",
                        highlight=False,
                        markup=False,
                    )
                    continue
                except Exception as exc:  # the template, the sandbox or the tokenizer refused this row
                    failures.append(f"row {row.get(plan.id_column, '?')!r}, step {step.name}: {exc}")
                    continue
                body = _compact(prep.request.preview())
                out.print(f"  row {row.get(plan.id_column, '?')!r}, step {step.name}: ~{prep.tokens} tokens reserved")
                out.print(json.dumps(body, ensure_ascii=False, indent=2)[:1500], highlight=False, markup=False)
                for f in step.output_fields():
                    row[f.name] = f"<{f.name} of step {step.name}>"
        break
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False, markup=False)
    if missing:
        err.print(f"[yellow]note[/]: API key variable(s) not set: {', '.join(missing)} (needed by `run`)")
    if failures:
        shown = "\n  ".join(failures)
        raise _fail(
            f"{len(failures)} sample request(s) could not be built; `run` would fail these rows:\n  {escape(shown)}"
        )
    model_warnings, model_notes = _check_models(plan, offline)  # a job that passes the rest: its models
    for note in model_notes:
        out.print(f"note: {note}", highlight=False, markup=False)
    for warning in model_warnings:
        err.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False, soft_wrap=True)
    sent = "nothing was sent" if offline else "no request was sent but GET /models"
    out.print(f"[green]ok[/]: {job} ({sent})")


def _check_models(plan: Any, offline: bool) -> tuple[list[str], list[str]]:
    """Warnings for models the providers do not list, and notes on what was not checked."""
    from .models import ModelListCache, StepModel, check_step_models

    spec = plan.job.spec
    steps = [StepModel(s.name, s.provider, s.model) for s in spec.steps]
    cache = ModelListCache(spec.cache.dir if spec.cache.enabled else None)
    result: tuple[list[str], list[str]] = _run_async(
        check_step_models(steps, plan.providers, plan.api_keys, cache, time.time(), offline=offline)
    )
    return result


@app.command()
def estimate(
    job: Path = typer.Argument(..., help="the job file (YAML)"),
    prices: Path | None = typer.Option(
        None,
        help="YAML/JSON {model: {input, output, cached_input: USD/1M tokens, audio_minute, image}} "
        "over the shipped prices and the job's `prices:`",
    ),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
    sim: bool = typer.Option(False, "--sim", help="for `run --sim`: its cache entries and earlier results"),
) -> None:
    """Forecast a job without sending anything: requests, tokens, time under the limits, cost."""
    from .estimate import estimate as run_estimate
    from .plan import build_plan

    try:
        # nothing is sent: the address only selects the simulator's cache entries and results
        plan = build_plan(job, require_keys=False, prices_file=prices, sim_url="http://127.0.0.1:9/v1" if sim else None)
        est = run_estimate(plan, plan.prices)
    except JobError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        print(json.dumps(est.as_json(), indent=2))
        return
    from rich.table import Table

    t = Table(title=f"estimate: {plan.job.spec.name} ({plan.total_rows:,} rows)", header_style="bold")
    for col in ("step", "model", "requests", "cached", "skipped", "prompt tokens", "completion", "cost USD"):
        t.add_column(col, justify="left" if col in ("step", "model") else "right")
    for s in est.steps:
        cost = "-" if s.cost is None else f"{s.cost:,.4f}"
        completion = f"{s.completion_tokens:,}"
        if s.kind == "transcribe":
            completion = f"{s.audio_minutes or 0:,.1f} audio min"
        elif s.kind == "image":
            completion = f"{s.images or 0:,} images"
        t.add_row(
            s.name,
            s.model,
            f"{s.requests:,}",
            f"{s.cached:,}",
            f"{s.skipped:,}",
            f"{s.prompt_tokens:,}",
            completion,
            cost,
        )
    out.print(t)
    for s in est.steps:
        if s.completion_basis:
            out.print(f"{s.name}: completion tokens from {s.completion_basis}", highlight=False)
    for name, minutes in est.minutes_by_provider.items():
        out.print(
            f"{name}: at least {minutes:,.1f} min ({_seconds(minutes * 60)}) under its limits "
            f"(binding: {est.binding_limit[name]})",
            highlight=False,
        )
    total = est.cost
    missing = sorted({s.model for s in est.steps if s.cost is None})
    if missing:
        out.print(
            f"no price for: {', '.join(missing)} (add them under `prices:` in the job or --prices)", highlight=False
        )
    elif total is not None:
        out.print(f"cost: ${total:,.4f} (prices as of {est.prices_as_of}, overridable)", highlight=False)


@app.command()
def sim(
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8765, help="port"),
    rpm: int | None = typer.Option(3000, help="requests per window per key (0: unlimited)"),
    tpm: int | None = typer.Option(1_000_000, help="tokens per window per key (0: unlimited)"),
    concurrency: int | None = typer.Option(100, help="requests in flight per key (0: unlimited)"),
    window: float = typer.Option(60.0, help="length of the rate window in seconds"),
    latency: float = typer.Option(0.2, help="seconds per request"),
    config: Path | None = typer.Option(None, help="a JSON/YAML file with a full simulator config (faults...)"),
) -> None:
    """Serve the OpenAI-compatible simulator (chat, responses, completions, embeddings, transcriptions, images,
    models)."""
    import yaml

    from .sim import KeyLimits, SimConfig, serve

    if config is not None:
        try:
            cfg = SimConfig.from_dict(yaml.safe_load(config.read_text()))
        except Exception as exc:
            raise _fail(f"cannot read simulator config {config}: {exc}") from None
    else:
        cfg = SimConfig(
            default_limits=KeyLimits(rpm=rpm or None, tpm=tpm or None, concurrency=concurrency or None),
            window_s=window,
            latency_s=latency,
        )

    def ready(url: str) -> None:
        err.print(f"simulator listening on {url}  (Ctrl-C to stop)", highlight=False)

    with contextlib.suppress(KeyboardInterrupt):
        _run_async(serve(cfg, host, port, on_ready=ready))


@app.command()
def models(
    provider: str = typer.Option("apiyi", help="a built-in profile or a provider of --job"),
    job: Path | None = typer.Option(None, help="take provider definitions from this job file"),
    sim: bool = typer.Option(False, "--sim", help="ask an in-process simulator"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts: [{id, owned_by, created}]"),
) -> None:
    """List the models a provider serves (GET /models): id, owner, date created."""
    from dataclasses import asdict, replace
    from datetime import UTC, datetime

    from .job.load import load_job
    from .job.profiles import resolve_provider
    from .models import fetch_models

    try:
        overrides = load_job(job).spec.providers if job else {}
        p = resolve_provider(provider, overrides)
    except JobError as exc:
        raise _fail(str(exc)) from None
    from .keypool import read_keys

    key = next(iter(read_keys(p.api_key_envs)[0]), None)  # a key pool: its first key lists the models
    if not key and not p.key_optional and not sim:
        raise _fail(f"set {p.api_key_env} to list the models of `{provider}`")

    stack = contextlib.ExitStack()
    try:
        if sim:
            from .sim import SimConfig, SimulatorThread

            s = stack.enter_context(SimulatorThread(SimConfig()))
            p, key = replace(p, base_urls=(str(s.url),)), "sim"
        listed = asyncio.run(fetch_models(p, key))
    except PipelineError as exc:
        raise _fail(f"cannot list models of `{provider}`: {exc}", EXIT_ABORTED) from None
    finally:
        stack.close()
    if listed.models is None:
        err.print(
            f"`{provider}` ({listed.url}) does not list its models: GET /models answered HTTP "
            f"{listed.status}. Jobs can still name any model the server serves.",
            highlight=False,
            soft_wrap=True,
        )
        if as_json:
            print("[]")
        return
    if as_json:
        print(json.dumps([asdict(m) for m in listed.models], indent=2))
        return
    from rich.table import Table

    t = Table(title=f"models of {provider}", header_style="bold")
    for col in ("id", "owner", "created"):
        t.add_column(col, no_wrap=col == "id")
    for m in listed.models:
        made = "-" if m.created is None else datetime.fromtimestamp(m.created, UTC).strftime("%Y-%m-%d")
        t.add_row(m.id, m.owned_by or "-", made)
    out.print(t)
    err.print(f"{len(listed.models)} models", highlight=False)


@cache_app.command("stats")
def cache_stats(directory: Path = typer.Option(Path(".pipeline-cache"), "--dir", help="cache folder")) -> None:
    """Entries and size of a cache folder."""
    from .cache import ResponseCache

    if not directory.exists():
        out.print(f"{directory}: no cache yet")
        return
    c = ResponseCache(directory)
    s = c.stats()
    c.close()
    out.print(f"{s.directory}: {s.entries:,} entries, {s.size_bytes / 1e6:,.1f} MB")


@cache_app.command("clear")
def cache_clear(
    directory: Path = typer.Option(Path(".pipeline-cache"), "--dir", help="cache folder"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
) -> None:
    """Delete every cached response (they were paid for: they will be paid for again)."""
    from .cache import ResponseCache

    if not directory.exists():
        out.print(f"{directory}: nothing to clear")
        return
    if not yes and not typer.confirm(f"delete every cached response in {directory}?"):
        raise typer.Exit(EXIT_OK)
    c = ResponseCache(directory)
    n = c.clear()
    c.close()
    out.print(f"{directory}: removed {n:,} entries")


def _job_file_given_to_inspect(path: Path) -> str:
    """`inspect` was given a job file: name the output file the job writes, when the job can be read."""
    from .job.load import load_job

    try:
        target = f": this job writes {load_job(path).spec.output.path}"
    except Exception:  # (a job file that does not load: its own errors are for `validate`)
        target = ""
    return f"{path} looks like a job file; inspect reads the output Parquet file of a run{target}"


@app.command()
def inspect(
    output: Path = typer.Argument(..., help="an output Parquet file of a run"),
    failed: int = typer.Option(10, help="show up to this many failed rows per step"),
) -> None:
    """Counts by status per step, and the failed rows with their errors."""
    import polars as pl

    if not output.exists():
        raise _fail(f"no such file: {output}")
    try:
        lf = pl.scan_parquet(output)
        cols = lf.collect_schema().names()
    except Exception as exc:
        if output.suffix.lower() in (".yaml", ".yml"):
            raise _fail(_job_file_given_to_inspect(output)) from None
        raise _fail(f"{output} is not a readable Parquet file: {exc}") from None
    steps = [c[: -len("__status")] for c in cols if c.endswith("__status")]
    if not steps:
        raise _fail(f"{output} has no <step>__status columns: not a pipeline output")
    n = lf.select(pl.len()).collect().item()
    out.print(f"{output}: {n:,} rows, steps: {', '.join(steps)}")
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    table.add_column("step")
    for s in ("ok", "error", "invalid", "skipped"):
        table.add_column(s, justify="right")
    for step in steps:
        counts = dict(lf.group_by(f"{step}__status").len().collect().iter_rows())
        table.add_row(step, *(f"{counts.get(s, 0):,}" for s in ("ok", "error", "invalid", "skipped")))
    out.print(table)
    id_col = next((c for c in cols if not c.startswith("__")), cols[0])
    for step in steps:
        answer: pl.Expr = pl.lit(None, pl.String)
        if f"{step}__raw" in cols:  # structured answers keep the answer that was invalid
            answer = pl.col(f"{step}__raw")
            if isinstance(lf.collect_schema()[f"{step}__raw"], pl.List):
                answer = answer.list.drop_nulls().list.join(" | ")
        bad = (
            lf.filter(pl.col(f"{step}__status").is_in(["error", "invalid"]))
            .select(id_col, f"{step}__status", f"{step}__error", answer)
            .head(failed)
            .collect()
        )
        if bad.height:
            out.print(f"[bold]{step}[/]: failed rows (first {bad.height})")
            for rid, status, error, answer in bad.iter_rows():
                out.print(f"  {rid!r}: {status}: {error}", highlight=False, markup=False)
                if answer:
                    out.print(f"    answer: {answer[:300]}", highlight=False, markup=False)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True)) -> None:
    """Batch jobs against OpenAI-compatible APIs."""


def arrow_pool_from_env() -> None:
    """Choose Arrow's memory pool for this process, before pyarrow is loaded (its C++ library reads
    ARROW_DEFAULT_MEMORY_POOL once, at its first allocation; a pool set later from Python does not reach
    the Parquet reader and writer): jemalloc on Linux, unless the environment chose one. The default
    (mimalloc 3) keeps freed pages for a second before it hands them back, and the threads that build
    the parts and the final file free megabytes a slice: a 10^5-row 1536-d embed run with the final file
    begun during the run peaked at 283-302 MB with mimalloc, 258 MB with jemalloc (without it: 248-270
    vs 239 MB), with half the system CPU time. (Child processes inherit the choice.) x86-64 only: Arrow's
    ARM wheels are built without jemalloc (apache/arrow#44342), and Arrow then warns on every run."""
    if sys.platform.startswith("linux") and platform.machine() == "x86_64" and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def freeze_malloc_thresholds() -> bool:
    """Keep glibc malloc's mmap threshold where it starts (128 kB), as if `MALLOC_TRIM_THRESHOLD_` were
    set to its default. glibc raises the threshold to the size of each large block freed (up to 32 MB):
    after the first packed answer of an embed run (megabytes) is freed, such answers come from the heap
    between the rows' small cache entries, and the heap never shrinks back. A 3x10^4-row 1536-d embed
    run with the cache on peaked at 297-310 MB with the dynamic threshold, 284-286 MB without it.
    glibc on Linux only, and not when the environment set any malloc tunable; True if it was set."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        import ctypes

        m_trim_threshold = -1  # (malloc.h): setting it turns the dynamic mmap threshold off
        return bool(ctypes.CDLL("libc.so.6").mallopt(m_trim_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False


def main() -> None:
    arrow_pool_from_env()
    freeze_malloc_thresholds()
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
