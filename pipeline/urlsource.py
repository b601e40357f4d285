"""An input given as an fsspec URL (`s3://bucket/key.parquet`, `file:///abs/rows.csv`, ...).

The same `Source` (schema, `input.schema` conversions, type scan, id checks, batches) with polars reading
file objects of the URL's file system; the Ray backend reads the rows themselves with ray.data on the
same file system (`raybackend.reading`). fsspec is imported only here, when an input is a URL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import IO, Any

from .errors import InputError
from .sources import FORMATS, Source, _first_line


def url_filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system of `url` and the path inside it; an InputError naming what to install."""
    try:
        import fsspec
    except ImportError as exc:
        raise InputError(
            f"input {url} is a URL, read through fsspec, which is not installed: pip install fsspec"
        ) from exc
    scheme = url.partition("://")[0]
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        # fsspec names the package of a known scheme, e.g. "Install s3fs to access S3"
        raise InputError(
            f"input {url}: the file system for {scheme}:// is not installed ({_first_line(exc)}); "
            f"install its fsspec package (e.g. pip install s3fs for s3://, gcsfs for gs://, adlfs for az://)"
        ) from exc
    except ValueError as exc:
        raise InputError(f"input {url}: fsspec does not know the scheme {scheme}:// ({_first_line(exc)})") from exc
    return fs, str(path)


@dataclass(frozen=True)
class UrlSource(Source):
    """A tabular input file behind a URL; `path` is the path inside its file system (for `file://`, the
    local path, so the output guard still sees when the output would be the input)."""

    url: str = field(default="", kw_only=True)

    @classmethod
    def open_url(
        cls,
        url: str,
        *,
        format: str | None,
        id_column: str | None,
        limit: int | None,
        dtypes: Mapping[str, str] | None = None,
    ) -> UrlSource:
        fs, path = url_filesystem(url)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise InputError(f"input file not found: {url}") from None
        except Exception as exc:
            raise InputError(f"cannot read input {url}: {_first_line(exc)}") from exc
        if info.get("type") != "file":
            raise InputError(f"input {url} is not a file (globs and folders are read from local paths only)")
        if not info.get("size"):
            raise InputError(f"input file {url} is empty (0 bytes): there are no rows to process")
        suffix = PurePosixPath(path).suffix.lower()
        fmt = format or FORMATS.get(suffix)
        if fmt is None:
            raise InputError(
                f"cannot tell the format of {url} from its extension {suffix!r}; "
                "use .csv, .jsonl or .parquet, or set input.format"
            )
        src = cls(Path(path), fmt, id_column, limit, dtypes=tuple((dtypes or {}).items()), url=url)
        src.schema()  # fail now, naming the URL, if it cannot be parsed
        return src

    @cached_property
    def filesystem(self) -> tuple[Any, str]:
        """The fsspec file system and the path inside it."""
        return url_filesystem(self.url)

    @property
    def label(self) -> str:
        return self.url

    def _data(self) -> str | Path | IO[bytes]:
        fs, path = self.filesystem
        data: IO[bytes] = fs.open(path, "rb")
        return data

    @property
    def base_dir(self) -> Path:
        """Relative file paths in the rows: beside a `file://` input, else from the current folder."""
        return self.path.parent if self.url.startswith("file://") else Path.cwd()

    def fingerprint(self) -> str:
        """Changes when the file (size, modification time or ETag), the id column or the row limit change."""
        fs, path = self.filesystem
        info = fs.info(path)
        stamp = next(
            (str(info[k]) for k in ("mtime", "LastModified", "last_modified", "ETag", "etag") if k in info), ""
        )
        h = hashlib.sha256(f"{self.url}|{info.get('size')}|{stamp}|{self.id_column}|{self.limit}".encode())
        return h.hexdigest()[:16]
