"""The job's input read with ray.data: the rows of `Source.batches`, in the same order and types.

ray.data reads the file (a local path, or an fsspec URL through the source's own file system) in
order (`preserve_order`); each Arrow batch becomes what the local reader would have yielded: the raw
columns as polars reads them (CSV all text, empty fields null and quoted empty text kept; JSONL with
the types polars inferred from every line), `input.schema` applied by `Source.typed` (the local
code), the local schema checked, and the 0-based row number in `__row` counted across batches, so
resume and the final file are the local run's.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import polars as pl
import pyarrow as pa

from ..errors import InputError
from ..sources import ROW, Source, _first_line
from ..urlsource import UrlSource


def _small(t: pa.DataType) -> pa.DataType:
    """The type without 64-bit offsets or views (what Arrow's JSON reader converts to)."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_list(t):
        return pa.list_(_small(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _small(f.type)) for f in t])
    return t


def _arrow_schema(schema: pl.Schema) -> pa.Schema:
    arrow = pl.DataFrame(schema=schema).to_arrow().schema
    return pa.schema([pa.field(f.name, _small(f.type)) for f in arrow])


def read_dataset(source: Source) -> Any:
    """A ray.data Dataset of the input's raw rows, in file order."""
    import pyarrow.csv as pa_csv
    import pyarrow.fs as pa_fs
    import pyarrow.json as pa_json
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    if isinstance(source, UrlSource):
        fs, path = source.filesystem
        filesystem: Any = pa_fs.PyFileSystem(pa_fs.FSSpecHandler(fs))
    else:
        path, filesystem = str(source.path.resolve()), None
    raw = source.raw_schema()
    common: dict[str, Any] = {"filesystem": filesystem, "file_extensions": None}
    if source.format == "csv":
        sep = "\t" if source.path.suffix.lower() == ".tsv" else ","
        return ray.data.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(delimiter=sep, newlines_in_values=True),
            # as polars reads CSV (`Source._raw`): text; an empty field is null, a quoted empty one ""
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(raw.names(), pa.string()),
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
            **common,
        )
    if source.format == "jsonl":
        # the Arrow reader (not `lines=True`, which goes through pandas) with the types polars inferred
        return ray.data.read_json(
            path, parse_options=pa_json.ParseOptions(explicit_schema=_arrow_schema(raw)), **common
        )
    return ray.data.read_parquet(path, **common)


def frames(source: Source, size: int) -> Generator[pl.DataFrame]:
    """What `source.batches(size)` yields (rows, types and `__row`), read by ray.data."""
    raw = source.raw_schema()
    want = source.schema()
    seen = 0
    try:
        ds = read_dataset(source)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=size):
            df = pl.from_arrow(batch)
            assert isinstance(df, pl.DataFrame)
            if source.limit is not None:
                df = df.head(max(0, source.limit - seen))
            if not df.height:
                if source.limit is not None and seen >= source.limit:
                    return
                continue
            df = source.typed(df.select(pl.col(n).cast(t) for n, t in raw.items()))
            df = df.select(pl.col(n).cast(t) for n, t in want.items()).with_row_index(ROW, offset=seen)
            seen += df.height
            yield df
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {source.format} input {source.label} with ray.data: {_first_line(exc)}") from exc
