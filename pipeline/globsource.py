"""Input rows from a glob of files or a folder of recordings: one row per file with its path, size, mtime."""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import polars as pl

from .audiofiles import AUDIO_EXTENSIONS
from .errors import InputError
from .sources import Source

COLUMNS = ("path", "size_bytes", "modified_at")
_TABLES = {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".pq", ".json"}
_MAGIC = re.compile(r"[*?\[]")


def is_glob(path: str) -> bool:
    """True when `path` has wildcards (* ? [...]) or {a,b} alternatives."""
    return bool(_MAGIC.search(path)) or len(expand_braces(path)) > 1


def _closing(s: str, i: int) -> int | None:
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in s:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += (c == "{") - (c == "}")
        cur += c
    return [*parts, cur]


def expand_braces(pattern: str) -> list[str]:
    """Shell-style alternatives: `a/*.{mp3,wav}` -> [`a/*.mp3`, `a/*.wav`] (nested too, order kept).

    Braces without a comma, or unbalanced ones, are literal characters.
    """
    i = 0
    while i < len(pattern):
        if pattern[i] == "{":
            j = _closing(pattern, i)
            if j is None:
                break
            alts = _split_top(pattern[i + 1 : j])
            if len(alts) > 1:
                out: list[str] = []
                for alt in alts:
                    for e in expand_braces(pattern[:i] + alt + pattern[j + 1 :]):
                        if e not in out:
                            out.append(e)
                return out
            i = j
        i += 1
    return [pattern]


def glob_root(pattern: str) -> Path:
    """The folder a glob starts from: its leading path components without wildcards or braces."""
    parts = Path(pattern).parts
    lead: list[str] = []
    for part in parts:
        if _MAGIC.search(part) or "{" in part:
            break
        lead.append(part)
    if len(lead) == len(parts):  # no wildcard at all: the pattern names one file, its folder is the root
        lead = lead[:-1]
    return Path(*lead) if lead else Path(".")


@dataclass(frozen=True)
class GlobSource(Source):
    """Files matched by a glob (or every audio file under a folder), sorted by path.

    Columns: `path` (relative to the glob's folder, `/`-separated), `size_bytes`, `modified_at` (UTC).
    Rows are keyed by `path` unless input.id says otherwise; relative paths resolve against the root.
    """

    pattern: str
    root: Path
    folder: bool  # a folder was given: its audio files, recursively, any letter case

    @classmethod
    def open_glob(
        cls, pattern: str, *, id_column: str | None, limit: int | None, format: str | None = None
    ) -> GlobSource:
        if format is not None:
            raise InputError(
                f"input.format {format!r} does not apply to {pattern}, a glob or folder of files; drop input.format"
            )
        folder = Path(pattern).is_dir()
        root = Path(pattern) if folder else glob_root(pattern)
        src = cls(Path(pattern), "glob", id_column or "path", limit, pattern, root, folder)
        if src.listing.height == 0:
            what = (
                f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in the folder {pattern}"
                if folder
                else f"no files match the input glob {pattern}"
            )
            raise InputError(f"{what} (relative paths are read from {Path.cwd()})")
        # A glob is a list of files, one row per file: tables matched by it would be read as files, not
        # as rows. Several tables are not concatenated: row positions (resume) and the fingerprint are
        # those of one file, and their columns and types could differ.
        tables = [p for p in src.listing["path"].to_list() if Path(p).suffix.lower() in _TABLES]
        if tables:
            shown = ", ".join(tables[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
            raise InputError(
                f"input.path {pattern} is a glob, and a glob means one row per FILE (columns path, size_bytes, "
                f"modified_at: for audio archives); it matched table file(s) {shown}, whose rows would not be "
                "read. To process the rows of several tables, join them into one file (e.g. with polars: "
                "pl.concat([pl.read_csv(f) for f in files]).write_parquet('all.parquet')) and point input.path "
                "at it; to list audio files, make the glob match only them (e.g. *.{mp3,wav})"
            )
        return src

    @property
    def base_dir(self) -> Path:
        return self.root.resolve()

    def _matches(self) -> list[str]:
        if self.folder:
            found = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in filenames:
                    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
                    if not name.startswith(".") and ext in AUDIO_EXTENSIONS:
                        found.append(os.path.join(dirpath, name))
            return found
        out: list[str] = []
        for pat in expand_braces(self.pattern):
            out.extend(glob.glob(pat, recursive=True))
        return out

    @cached_property
    def listing(self) -> pl.DataFrame:
        """The matched files, read once per run: the rows and the fingerprint both come from it."""
        rows: dict[str, tuple[int, int]] = {}
        try:
            for m in self._matches():
                try:
                    st = os.stat(m)
                except OSError:
                    continue  # vanished, or a dangling link
                if not os.path.isfile(m):
                    continue
                rel = Path(os.path.relpath(m, self.root)).as_posix()
                rows.setdefault(rel, (st.st_size, st.st_mtime_ns))
        except OSError as exc:
            raise InputError(f"cannot list {self.pattern}: {exc}") from exc
        paths = sorted(rows)
        return pl.DataFrame(
            {
                "path": paths,
                "size_bytes": [rows[p][0] for p in paths],
                "modified_at": [datetime.fromtimestamp(rows[p][1] / 1e9, UTC) for p in paths],
            },
            schema={"path": pl.String, "size_bytes": pl.Int64, "modified_at": pl.Datetime("us", "UTC")},
        )

    def _scan(self) -> pl.LazyFrame:
        lf = self.listing.lazy()
        return lf.head(self.limit) if self.limit is not None else lf

    def fingerprint(self) -> str:
        """Changes when a file is added, removed, resized or touched (row positions would move)."""
        h = hashlib.sha256(f"{self.base_dir}|{self.pattern}|{self.id_column}|{self.limit}".encode())
        for path, size, mtime in self.listing.iter_rows():
            h.update(f"\x00{path}|{size}|{mtime.timestamp():.6f}".encode())
        return h.hexdigest()[:16]
