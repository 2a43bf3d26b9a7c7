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
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ..config import Config
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


class _Damaged(RegisterError):
    pass


def _damaged(name: str, line: int, what: str) -> _Damaged:
    return _Damaged(f"{name} line {line}: {what}; the file is damaged: download it again "
                    f"(the register in use is unchanged)")


def _unit_batches(header: list[str], reader: Iterator[list[str]], rep: FileReport,
                  tick) -> Iterator[list[tuple]]:
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
            raise _damaged(rep.name, rows + 1, f"{len(r)} fields where the header has {width}")
        s = r[i_siren]
        if len(s) != 9 or not s.isdigit():
            raise _damaged(rep.name, rows + 1, f"siren {s!r} is not 9 digits")
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


def _etab_batches(header: list[str], reader: Iterator[list[str]], rep: FileReport,
                  tick) -> Iterator[list[tuple]]:
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
            raise _damaged(rep.name, rows + 1, f"{len(r)} fields where the header has {width}")
        s = r[i_siret]
        if len(s) != 14 or not s.isdigit():
            raise _damaged(rep.name, rows + 1, f"siret {s!r} is not 14 digits")
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
            for kind in ("unite_legale", "etablissement"):
                path = files.get(kind)    # type: ignore[call-overload]
                if path is None:
                    if builder.carry_over(kind):
                        report.carried_over.append(kind)
                    else:
                        report.missing.append(kind)
                    continue
                rep = FileReport(name=path.name, kind=kind)
                report.files.append(rep)
                t0 = time.monotonic()

                def tick(rep: FileReport = rep, t0: float = t0) -> None:
                    rate = rep.rows / max(time.monotonic() - t0, 1e-9)
                    progress(f"{rep.name} ({rate:,.0f} rows/s)", rep.rows, None)

                with open_csv(path) as (header, reader):
                    make = _unit_batches if kind == "unite_legale" else _etab_batches
                    builder.load(kind, make(header, reader, rep, tick))
                rep.seconds = time.monotonic() - t0
                progress(f"{rep.name} ({rep.rate:,.0f} rows/s)", rep.rows, rep.rows)
                meta[f"{kind}_file"] = path.name
                meta[f"{kind}_rows"] = str(rep.kept)
            builder.finish(meta)
    except sqlite3.IntegrityError as exc:
        raise RegisterError(f"a number appears twice in the files ({exc}); they are damaged: "
                            f"download them again (the register in use is unchanged)") from None
    except sqlite3.OperationalError as exc:
        raise RegisterError(f"cannot write the register {where.label}: {exc} "
                            f"(free disk space?); the register in use is unchanged") from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise RegisterError(f"PostgreSQL {where.label}: "
                                f"{str(exc).strip().splitlines()[0]}; the register in use is "
                                f"unchanged") from None
        raise
    report.seconds = time.monotonic() - t_all
    return report
