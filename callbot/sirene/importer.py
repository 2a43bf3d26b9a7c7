"""`callbot sirene import`: the monthly stock files into the local register copy.

The files are big (about 30 million legal units, 40 million establishments), so nothing
is ever held whole: the CSV is read as a stream (straight out of the zip member), turned
into batches of the columns the answers need (``rows``), and written batch by batch;
memory stays flat whatever the file size. Which file is which is read from its header, and a file that
lacks a needed column is refused, by name, before anything is written.

What may never be said is not even stored: a unit outside the public diffusion keeps only
its number and that fact; an individual entrepreneur's name columns are never read; a
purged unit is left out (the register treats it as gone).
"""

from __future__ import annotations

import csv
import gc
import io
import multiprocessing
import sqlite3
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..config import Config
from ..errors import CallbotError
from ..progress import ProgressFn, silent
from .rows import FileReport, stored_batches
from .schema import FILE_NAMES, Kind, SchemaError, kind_of
from .store import RegisterError, building, location


@dataclass
class ImportReport:
    where: str
    files: list[FileReport] = field(default_factory=list)
    carried_over: list[str] = field(default_factory=list)   # kinds kept from the last import
    missing: list[str] = field(default_factory=list)        # kinds neither given nor kept
    seconds: float = 0.0


def read_header(path: Path) -> list[str]:
    """The column names of a stock file (plain CSV or the zip INSEE publishes)."""
    if not path.exists():
        raise RegisterError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if m.lower().endswith(".csv")]
                if len(members) != 1:
                    raise RegisterError(
                        f"{path}: the zip holds {len(members)} CSV files "
                        f"({', '.join(members) or 'none'}); a Sirene stock zip holds one")
                with zf.open(members[0]) as raw:
                    return _first_line(io.TextIOWrapper(raw, encoding="utf-8-sig",
                                                        newline=""), path)
        with open(path, encoding="utf-8-sig", newline="") as text:
            return _first_line(text, path)
    except UnicodeDecodeError:
        raise RegisterError(f"{path}: not UTF-8 text; take the *_utf8 stock files "
                            f"(StockUniteLegale_utf8.zip, StockEtablissement_utf8.zip)") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise RegisterError(f"{path}: damaged zip ({exc}); download it again") from None
    except csv.Error as exc:
        raise RegisterError(f"{path}: not a readable CSV ({exc}); download it again") from None


def _first_line(text: TextIO, path: Path) -> list[str]:
    header = next(csv.reader(text), None)
    if not header:
        raise RegisterError(f"{path}: empty file (no header line)")
    return [h.strip() for h in header]


def check_files(paths: list[Path]) -> dict[Kind, Path]:
    """Each file's kind from its header (every needed column checked); nothing written."""
    kinds: dict[Kind, Path] = {}
    for path in paths:
        kind = kind_of(read_header(path), str(path))
        if kind in kinds:
            raise SchemaError(f"{kinds[kind]} and {path} are both {FILE_NAMES[kind]} files; "
                              f"give one of each kind")
        kinds[kind] = path
    return kinds


def _explain(exc: BaseException, where: str) -> RegisterError | None:
    """A database error of an import as one line a user can act on (None: not ours)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return RegisterError(f"a number appears twice in the files ({exc}); they are damaged:"
                             f" download them again (the register in use is unchanged)")
    if isinstance(exc, sqlite3.OperationalError):
        return RegisterError(f"cannot write the register {where}: {exc} (free disk "
                             f"space?); the register in use is unchanged")
    if type(exc).__module__.startswith("psycopg"):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return RegisterError(f"PostgreSQL {where}: {first}; the register in use is unchanged")
    return None


def _part_child(kind: str, path: Path, part: Path, where: str, counter, send) -> None:
    """One file into its own part file, in a child process (see _load_parallel)."""
    from .store import fill_part

    try:
        rep = FileReport(name=path.name, kind=kind)
        t0 = time.monotonic()

        def tick(rows: int) -> None:
            counter.value = rows

        fill_part(part, kind, stored_batches(kind, path, read_header(path), rep, tick))
        rep.seconds = time.monotonic() - t0
        send.send(("ok", rep))
    except BaseException as exc:        # noqa: BLE001 - reported to the parent as a line
        known = exc if isinstance(exc, CallbotError) else _explain(exc, where)
        send.send(("error", str(known) if known else f"{path.name}: "
                   f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()


def _load_parallel(builder, files: dict[str, Path], where: str,
                   progress: ProgressFn) -> list[FileReport]:
    """Both files at once, one child process each, then their tables into the register."""
    # Pages the children only read stay shared: without the freeze, their collector's
    # passes over the parent's objects copied those pages (12 MB more at the peak).
    gc.freeze()
    ctx = multiprocessing.get_context("fork")
    jobs = []
    for kind, path in files.items():
        counter = ctx.Value("q", 0, lock=False)
        recv, send = ctx.Pipe(duplex=False)
        part = builder.part_path(kind)
        proc = ctx.Process(target=_part_child, daemon=True,
                           args=(kind, path, part, where, counter, send))
        proc.start()
        send.close()
        jobs.append((kind, path, part, proc, recv, counter, time.monotonic()))
    results: dict[str, tuple] = {}
    try:
        while len(results) < len(jobs):
            for kind, path, _, proc, recv, counter, t0 in jobs:
                if kind in results:
                    continue
                if recv.poll(0.1):
                    try:
                        results[kind] = recv.recv()
                    except EOFError:
                        results[kind] = ("error", f"the import of {path.name} stopped "
                                                  f"(exit code {proc.exitcode})")
                elif not proc.is_alive() and not recv.poll():
                    results[kind] = ("error", f"the import of {path.name} stopped "
                                              f"(exit code {proc.exitcode})")
                else:
                    rate = counter.value / max(time.monotonic() - t0, 1e-9)
                    progress(f"{path.name} ({rate:,.0f} rows/s)", counter.value, None)
        for _, _, _, proc, _, _, _ in jobs:
            proc.join()
    finally:
        for _, _, _, proc, recv, _, _ in jobs:
            if proc.is_alive():
                proc.kill()
                proc.join()
            recv.close()
    errors = [r[1] for r in results.values() if r[0] == "error"]
    if errors:
        raise RegisterError(errors[0])
    reports = []
    for kind, _, part, *_ in jobs:
        rep = results[kind][1]
        progress(f"{rep.name} ({rep.rate:,.0f} rows/s)", rep.rows, rep.rows)
        builder.absorb(kind, part)
        reports.append(rep)
    return reports


def import_files(config: Config, paths: list[Path | str],
                 progress: ProgressFn = silent) -> ImportReport:
    """Build a new register copy from the stock files and swap it in.

    A kind of file not given (only the legal units this month, say) is carried over from
    the copy in use. Any error leaves the copy in use as it was.
    """
    files = check_files([Path(p) for p in paths])
    where = location(config)
    report = ImportReport(where=where.label)
    t_all = time.monotonic()
    meta = {"imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        with building(where) as builder:
            given = {k: files[k] for k in ("unite_legale", "etablissement") if k in files}
            if len(given) == 2 and builder.parallel:
                report.files = _load_parallel(builder, given, where.label, progress)
            for kind in ("unite_legale", "etablissement"):
                path = files.get(kind)    # type: ignore[call-overload]
                if path is None:
                    if builder.carry_over(kind):
                        report.carried_over.append(kind)
                    else:
                        report.missing.append(kind)
                    continue
                if any(f.kind == kind for f in report.files):
                    continue                      # loaded in parallel above
                rep = FileReport(name=path.name, kind=kind)
                report.files.append(rep)
                t0 = time.monotonic()

                def tick(rows: int, rep: FileReport = rep, t0: float = t0) -> None:
                    rate = rows / max(time.monotonic() - t0, 1e-9)
                    progress(f"{rep.name} ({rate:,.0f} rows/s)", rows, None)

                builder.load(kind, stored_batches(kind, path, read_header(path), rep, tick))
                rep.seconds = time.monotonic() - t0
                progress(f"{rep.name} ({rep.rate:,.0f} rows/s)", rep.rows, rep.rows)
            for rep in report.files:
                meta[f"{rep.kind}_file"] = rep.name
                meta[f"{rep.kind}_rows"] = str(rep.kept)
            builder.finish(meta)
    except CallbotError:
        raise
    except Exception as exc:
        known = _explain(exc, where.label)
        if known is None:
            raise
        raise known from None
    report.seconds = time.monotonic() - t_all
    return report
