"""An input given as an fsspec URL (what the Ray backend reads with ray.data, e.g. `s3://`): the plan's
checks are the local reader's through the URL's file system, and a missing file system says what to
install. No Ray needed: these run in the default suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError, JobError
from pipeline.plan import build_plan
from pipeline.sources import Source, is_url

from .conftest import run_job, write_job

pytest.importorskip("fsspec")


def open_(path: str, **kw: Any) -> Source:
    return Source.open(path, format=None, id_column=kw.pop("id_column", None), limit=None, **kw)


def test_a_url_is_told_from_a_path() -> None:
    assert is_url("s3://bucket/rows.parquet") and is_url("file:///tmp/rows.csv")
    assert not is_url("/tmp/rows.csv") and not is_url("rows.csv") and not is_url("C://rows.csv")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3://bucket/rows.csv", "pip install s3fs"),  # s3fs is not installed here
        ("nope://bucket/rows.csv", "does not know the scheme nope://"),
    ],
)
def test_a_url_whose_file_system_is_missing_names_the_input_and_what_to_install(url: str, says: str) -> None:
    if url.startswith("s3://"):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("s3fs is installed")
    with pytest.raises(InputError) as err:
        open_(url)
    assert url in str(err.value) and says in str(err.value)


def test_a_file_url_reads_as_the_path_does_with_its_checks(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,code,stars\na,007,5\nb,,x\n")
    with pytest.raises(InputError) as err:  # the local type scan, naming the URL, the row and the value
        open_(src.as_uri(), dtypes={"stars": "int64"}).check()
    assert f"{src.as_uri()}, row 2" in str(err.value) and "'x'" in str(err.value)
    by_url, by_path = open_(src.as_uri(), id_column="id"), open_(str(src), id_column="id")
    assert by_url.schema() == by_path.schema() and by_url.check() == by_path.check() == 2
    assert [b.rows() for b in by_url.batches(1)] == [b.rows() for b in by_path.batches(1)]
    assert by_url.base_dir == tmp_path
    with pytest.raises(InputError, match="input file not found: file://"):
        open_(src.as_uri() + ".missing")


def test_a_job_on_a_file_url_writes_what_the_path_writes_and_keeps_the_output_guard(tmp_path: Path, sim: Any) -> None:
    job = write_job(tmp_path, sim.url, rows=12)
    out = tmp_path / "out" / "labeled.parquet"
    run_job(job)
    by_path = pq.read_table(out)
    out.rename(tmp_path / "by_path.parquet")
    csv = tmp_path / "reviews.csv"
    text = job.read_text().replace(f"path: {csv}", f"path: {csv.as_uri()}")
    job.write_text(text.replace(f"dir: {tmp_path / 'cache'}", f"dir: {tmp_path / 'cache2'}"))  # asked again
    summary = run_job(job)
    assert summary.rows_processed == 12
    assert pq.read_table(out).equals(by_path)
    # the output may not be the input, whether the input is named by path or by URL
    job.write_text(job.read_text().replace(f"path: {out}", f"path: {csv}"))
    with pytest.raises(JobError, match="is the input file"):
        build_plan(job)
