"""Turn a job file into a checked plan: every check that needs no request happens here, all at once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from .endpoints import StepRuntime, build_runtime
from .errors import InputError, JobError, looks_like_key, mask_secret
from .job.load import LoadedJob, load_job
from .job.params import check_params, image_problems
from .job.profiles import ResolvedProvider, resolve_provider
from .keypool import read_keys
from .pricing import PriceTable, job_prices
from .sinks import output_problems, step_fields
from .sources import ROW, Source
from .templating import check_columns

DEFAULT_ID = "row_id"
_SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization"}


@dataclass
class Plan:
    """Everything a run needs, validated."""

    job: LoadedJob
    source: Source
    total_rows: int
    providers: dict[str, ResolvedProvider]
    api_keys: dict[str, str | None]
    steps: list[StepRuntime]
    id_column: str
    keep: list[str]
    carried_columns: list[str]  # `__row`, the id and the kept input columns: what every part row starts with
    output: Path
    part_schema: pa.Schema
    fingerprint: str
    prices: PriceTable
    simulated: bool = False
    notes: list[str] = field(default_factory=list)
    # providers with several keys (api_key_env a list, or a variable of comma-separated keys): every key
    key_pools: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def final_schema(self) -> pa.Schema:
        return self.part_schema.remove(self.part_schema.get_field_index(ROW))

    @property
    def status_columns(self) -> list[str]:
        return [f"{s.name}__status" for s in self.steps]


def _named(path: Path, problems: list[str]) -> str:
    """Every problem on its own line, prefixed with the job file it is about."""
    return "\n".join(f"{path}: {p}" for p in problems)


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    return pl.Series([], dtype=dtype).to_arrow().type


def build_plan(
    job_path: str | Path,
    *,
    sim_url: str | None = None,
    require_keys: bool = True,
    check_ids: bool = True,
    prices_file: Path | None = None,
) -> Plan:
    """Load, validate and resolve a job. Raises JobError naming every problem found.

    `sim_url` points every provider at a simulator (`run --sim`): keys are then not needed and the
    cache keeps simulated answers apart from real ones. `prices_file` overrides the job's prices.
    """
    job = load_job(job_path)
    spec = job.spec
    problems: list[str] = []
    try:
        prices = job_prices(spec.prices, job.path.parent, prices_file)
    except JobError as exc:
        problems.append(str(exc))
        prices = PriceTable({})

    providers: dict[str, ResolvedProvider] = {}
    for step in spec.steps:
        if step.provider in providers:
            continue
        try:
            p = resolve_provider(step.provider, spec.providers)
        except JobError as exc:
            problems.append(f"step `{step.name}`: {exc}")
            continue
        if sim_url is not None:
            p = dataclasses.replace(p, base_urls=(sim_url,), api_key_env=None, key_optional=True)
        providers[step.provider] = p

    api_keys: dict[str, str | None] = {}
    key_pools: dict[str, tuple[str, ...]] = {}
    for name, p in providers.items():
        if sim_url is not None:
            api_keys[name] = f"sim-{name}"
            continue
        keys, unset = read_keys(p.api_key_envs)
        if unset and require_keys and not (p.key_optional and not keys):
            many = len(unset) > 1
            problems.append(
                f"provider `{name}` needs an API key in the environment variable{'s' if many else ''} "
                f"{', '.join(unset)}, which {'are' if many else 'is'} not set; "
                f"export {' '.join(f'{v}=...' for v in unset)} (or rehearse with `pipeline run --sim`)"
            )
        api_keys[name] = keys[0] if keys else None
        if len(keys) > 1:
            key_pools[name] = tuple(keys)

    notes: list[str] = []
    for name, p in providers.items():
        for header, value in p.headers:
            if looks_like_key(value) or header.lower() in _SECRET_HEADERS:
                notes.append(
                    f"provider `{name}` sets header {header}: {mask_secret(value)} in the job file; keys "
                    "belong in an environment variable (api_key_env), not in a file others may read"
                )

    try:
        source = Source.open(
            spec.input.path,
            format=spec.input.format,
            id_column=spec.input.id,
            limit=spec.input.limit,
            dtypes=spec.input.dtypes,
        )
    except InputError as exc:
        raise JobError(_named(job.path, [*problems, str(exc)])) from exc
    output = Path(spec.output.path)
    problems += output_problems(output, [source.path] if source.format != "glob" else [], spec.name)
    schema = source.schema()
    input_cols = list(schema.names())

    steps: list[StepRuntime] = []
    available = list(input_cols)  # what templates may read: input columns and earlier steps' values
    taken = set(input_cols)  # what a step may not write: those and every earlier step's columns
    types: dict[str, pa.DataType] = {c: _arrow_type(schema[c]) for c in input_cols}
    for step in spec.steps:
        ns = f"{step.provider}@sim" if sim_url is not None else step.provider
        resolved = providers.get(step.provider)
        try:
            rt = build_runtime(
                step,
                ns,
                resolved.tokenizer if resolved else None,
                input_dir=source.base_dir,
                structured_via=resolved.structured_via if resolved else None,
                output=output,
                id_column=source.id_column,
            )
        except JobError as exc:
            problems.append(str(exc))
            continue
        problems += check_columns([(t, "columns available here are") for t in rt.templates()], available)
        param_kind = "responses" if getattr(step, "api", "chat") == "responses" else step.kind
        param_problems, param_notes = check_params(
            param_kind, step.params, step.name, step.provider, resolved.extra_params if resolved else "error"
        )
        if step.kind == "image":
            param_problems += image_problems(step.model, step.params, step.name)
        elif resolved is not None and resolved.limits.ipm is not None:
            param_problems.append(
                f"step `{step.name}` (kind: {step.kind}) uses provider `{step.provider}`, whose "
                "limits set ipm (images per minute, held where tpm is): give it another provider"
            )
        problems += param_problems
        notes += param_notes
        if resolved is not None:
            problems += rt.plan_problems(types, resolved.limits)
        written = [f.name for f in step_fields(rt.name, rt.output_fields())]
        clash = sorted({c for c in written if c in taken or written.count(c) > 1})
        if clash:
            shown = ", ".join(f"`{c}`" for c in clash)
            problems.append(
                f"step `{step.name}` writes column(s) {shown}, which already exist; set `output:` to another name"
            )
        taken.update(written)
        steps.append(rt)
        available += [f.name for f in rt.output_fields()]
        types.update((f.name, f.type) for f in rt.output_fields())
        notes += rt.notes()

    keep = spec.output.keep if spec.output.keep is not None else input_cols
    missing_keep = [c for c in keep if c not in input_cols]
    if missing_keep:
        problems.append(
            f"output.keep names unknown column(s) {', '.join(missing_keep)}; input columns are: {', '.join(input_cols)}"
        )
    input_id = source.id_column  # input.id, or the source's natural key (a glob's `path`)
    if input_id is None and DEFAULT_ID in input_cols:
        problems.append(f"the input has a column `{DEFAULT_ID}`; set input.id to it (or to another unique column)")
    if problems:
        raise JobError(_named(job.path, problems))

    try:
        total = source.check() if check_ids else 0
    except InputError as exc:
        raise JobError(_named(job.path, [str(exc)])) from exc
    id_column = input_id or DEFAULT_ID
    fields: list[pa.Field] = [pa.field(ROW, pa.uint32())]
    if input_id is None:
        fields.append(pa.field(DEFAULT_ID, pa.int64()))
    elif input_id not in keep:
        fields.append(pa.field(id_column, _arrow_type(schema[id_column])))
    for c in keep:
        fields.append(pa.field(c, _arrow_type(schema[c])))
    carried = [f.name for f in fields]
    for rt in steps:
        fields += step_fields(rt.name, rt.output_fields())
    part_schema = pa.schema(fields)

    fp = hashlib.sha256()
    fp.update(source.fingerprint().encode())
    volatile = {"run", "cache", "retry", "providers", "prices", "budget"}  # not part of what the rows hold
    fp.update(json.dumps(spec.model_dump(mode="json", exclude=volatile), sort_keys=True).encode())
    fp.update(b"sim" if sim_url is not None else b"real")
    for rt in steps:
        fp.update(rt.identity().encode())
    return Plan(
        job=job,
        source=source,
        total_rows=total,
        providers=providers,
        api_keys=api_keys,
        key_pools=key_pools,
        steps=steps,
        id_column=id_column,
        keep=list(keep),
        carried_columns=carried,
        output=output,
        part_schema=part_schema,
        prices=prices,
        fingerprint=fp.hexdigest()[:20],
        simulated=sim_url is not None,
        notes=notes,
    )
