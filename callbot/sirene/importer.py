"""`callbot sirene import`: the monthly stock files into the local register copy.

The files are big (about 30 million legal units, 40 million establishments), so nothing
is ever held whole: the CSV is read as a stream (straight out of the zip member), turned
into small tuples of the columns the answers need, and written in batches; memory stays
flat whatever the file size. Which file is which is read from its header, and a file that
lacks a needed column is refused, by name, before anything is written.

What may never be said is not even stored: a unit outside the public diffusion keeps only
its number and that fact; an individual entrepreneur's name columns are never read; a
purged unit is left out (the register treats it as gone).
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..config import Config
from ..errors import CallbotError
from ..progress import ProgressFn, silent
from .schema import (DIFFUSIBLE, FILE_NAMES, PERSONNE_PHYSIQUE, Kind, SchemaError,
                     kind_of)
from .store import RegisterError, building, location

BATCH_ROWS = 20_000
# Real stock fields are short; the csv module's default limit (128 KiB) would only hide a
# damaged file, so it stays as it is.


@dataclass
class FileReport:
    """What one file brought in."""

    name: str
    kind: str
    rows: int = 0            # data lines read
    kept: int = 0            # rows stored
    purged: int = 0          # purged units left out
    not_diffusible: int = 0  # stored as "not diffusible" and nothing else
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ImportReport:
    where: str
    files: list[FileReport] = field(default_factory=list)
    carried_over: list[str] = field(default_factory=list)   # kinds kept from the last import
    missing: list[str] = field(default_factory=list)        # kinds neither given nor kept
    seconds: float = 0.0


@contextmanager
def open_csv(path: Path) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    """(header, rows) of a stock file, plain CSV or the zip INSEE publishes, streamed."""
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
                    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
                    yield from _rows(text, path)
        else:
            with open(path, encoding="utf-8-sig", newline="") as text:
                yield from _rows(text, path)
    except UnicodeDecodeError:
        raise RegisterError(f"{path}: not UTF-8 text; take the *_utf8 stock files "
                            f"(StockUniteLegale_utf8.zip, StockEtablissement_utf8.zip)") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise RegisterError(f"{path}: damaged zip ({exc}); download it again") from None
    except csv.Error as exc:
        raise RegisterError(f"{path}: not a readable CSV ({exc}); download it again") from None


def _rows(text: TextIO, path: Path) -> Iterator[tuple[list[str], Iterator[list[str]]]]:
    reader = csv.reader(text)
    header = next(reader, None)
    if not header:
        raise RegisterError(f"{path}: empty file (no header line)")
    yield [h.strip() for h in header], reader


def _damaged(name: str, line: int, what: str) -> RegisterError:
    return RegisterError(f"{name} line {line}: {what}; the file is damaged: download it again "
                    f"(the register in use is unchanged)")


def _unit_batches(header: list[str], reader, rep: FileReport,
                  tick: Callable[[], None]) -> Iterator[list[tuple]]:
    """Legal units as stored rows, in batches; purged units left out, units outside the
    diffusion reduced to their number, no name for an individual entrepreneur."""
    ix = {c: i for i, c in enumerate(header)}
    i_siren, i_stat, i_purg = ix["siren"], ix["statutDiffusionUniteLegale"], \
        ix["unitePurgeeUniteLegale"]
    i_cre, i_deb, i_etat = ix["dateCreationUniteLegale"], ix["dateDebut"], \
        ix["etatAdministratifUniteLegale"]
    i_den, i_cat = ix["denominationUniteLegale"], ix["categorieJuridiqueUniteLegale"]
    i_ape, i_nom = ix["activitePrincipaleUniteLegale"], \
        ix["nomenclatureActivitePrincipaleUniteLegale"]
    i_nic = ix["nicSiegeUniteLegale"]
    i_n25 = ix.get("activitePrincipaleNAF25UniteLegale")
    width = len(header)
    batch: list[tuple] = []
    rows = 0
    for r in reader:
        rows += 1
        if len(r) != width:
            raise _damaged(rep.name, reader.line_num,
                           f"{len(r)} fields where the header has {width}")
        s = r[i_siren]
        if len(s) != 9 or not s.isdigit():
            raise _damaged(rep.name, reader.line_num, f"siren {s!r} is not 9 digits")
        p = r[i_purg]
        if p and p.lower() == "true":
            rep.purged += 1
            continue
        if r[i_stat] != DIFFUSIBLE:
            rep.not_diffusible += 1
            batch.append((int(s), False, None, None, None, None, None, None, None, None, None))
        else:
            cat = r[i_cat]
            batch.append((int(s), True, r[i_etat] or None, r[i_deb] or None, r[i_cre] or None,
                          r[i_ape] or None, r[i_nom] or None,
                          (r[i_n25] or None) if i_n25 is not None else None, cat or None,
                          None if cat == PERSONNE_PHYSIQUE else (r[i_den] or None),
                          r[i_nic] or None))
        if len(batch) >= BATCH_ROWS:
            rep.rows, rep.kept = rows, rep.kept + len(batch)
            yield batch
            batch = []
            tick()
    rep.rows, rep.kept = rows, rep.kept + len(batch)
    if batch:
        yield batch


def _etab_batches(header: list[str], reader, rep: FileReport,
                  tick: Callable[[], None]) -> Iterator[list[tuple]]:
    """Establishments as stored rows, in batches: no place for one outside the diffusion,
    never a street address."""
    ix = {c: i for i, c in enumerate(header)}
    i_siret, i_stat = ix["siret"], ix["statutDiffusionEtablissement"]
    i_siege, i_etat = ix["etablissementSiege"], ix["etatAdministratifEtablissement"]
    i_cp, i_com = ix["codePostalEtablissement"], ix["libelleCommuneEtablissement"]
    width = len(header)
    batch: list[tuple] = []
    rows = 0
    for r in reader:
        rows += 1
        if len(r) != width:
            raise _damaged(rep.name, reader.line_num,
                           f"{len(r)} fields where the header has {width}")
        s = r[i_siret]
        if len(s) != 14 or not s.isdigit():
            raise _damaged(rep.name, reader.line_num, f"siret {s!r} is not 14 digits")
        siege = r[i_siege] == "true"
        if r[i_stat] != DIFFUSIBLE:
            rep.not_diffusible += 1
            batch.append((int(s), False, siege, r[i_etat] or None, None, None))
        else:
            batch.append((int(s), True, siege, r[i_etat] or None, r[i_cp] or None,
                          r[i_com] or None))
        if len(batch) >= BATCH_ROWS:
            rep.rows, rep.kept = rows, rep.kept + len(batch)
            yield batch
            batch = []
            tick()
    rep.rows, rep.kept = rows, rep.kept + len(batch)
    if batch:
        yield batch


def check_files(paths: list[Path]) -> dict[Kind, Path]:
    """Each file's kind from its header (every needed column checked); nothing written."""
    kinds: dict[Kind, Path] = {}
    for path in paths:
        with open_csv(path) as (header, _):
            kind = kind_of(header, str(path))
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


def _batches(kind: str):
    return _unit_batches if kind == "unite_legale" else _etab_batches


def _part_child(kind: str, path: Path, part: Path, where: str, counter, send) -> None:
    """One file into its own part file, in a child process (see _load_parallel)."""
    from .store import fill_part

    try:
        rep = FileReport(name=path.name, kind=kind)
        t0 = time.monotonic()

        def tick() -> None:
            counter.value = rep.rows

        with open_csv(path) as (header, reader):
            fill_part(part, kind, _batches(kind)(header, reader, rep, tick))
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

                def tick(rep: FileReport = rep, t0: float = t0) -> None:
                    rate = rep.rows / max(time.monotonic() - t0, 1e-9)
                    progress(f"{rep.name} ({rate:,.0f} rows/s)", rep.rows, None)

                with open_csv(path) as (header, reader):
                    builder.load(kind, _batches(kind)(header, reader, rep, tick))
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
