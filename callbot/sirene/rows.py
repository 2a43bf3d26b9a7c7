"""A stock file as stored rows: Arrow batches of only what the answers may say.

Why Arrow: Python's ``csv`` module splits every one of the 35 or 54 fields of a row, and
filtering in a Python loop then costs as much again; on the generated million-unit files
that capped an import at 60,000 rows/s per file. Arrow's CSV reader (C++) parses only the
needed columns, and the privacy rules below run as column operations: parsing and
filtering take about 1 µs a row, and what is left is the database's own insert.

The rules, applied before anything is stored:

- a purged unit (``unitePurgeeUniteLegale`` true) is left out: the register treats it as
  gone;
- a unit or establishment outside the public diffusion keeps its number and that fact
  (and, for an establishment, whether it is a head office and its state), nothing else;
- an individual entrepreneur's name columns are never read, and the ``denomination`` of a
  natural person is never stored;
- no street address is ever read.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .schema import DIFFUSIBLE, NEEDED, PERSONNE_PHYSIQUE
from .store import RegisterError

# Bytes parsed per batch. Arrow keeps a few blocks in flight: on the generated
# million-unit files the whole import's peak (both files at once, summed PSS) was 279 MB
# with 1 MB blocks and 225 MB with 512 kB, at the same speed; 4 MB blocks took a single
# file's process to 395 MB.
READ_BLOCK = 1 << 19

# The NAF 2025 columns appeared in 2025; an older file is read without them.
OPTIONAL = {"unite_legale": ("activitePrincipaleNAF25UniteLegale",), "etablissement": ()}

KEYS = {"unite_legale": ("siren", 9), "etablissement": ("siret", 14)}

Tick = Callable[[int], None]


def damaged(name: str, line: int | None, what: str) -> RegisterError:
    where = f" line {line}" if line else ""
    return RegisterError(f"{name}{where}: {what}; the file is damaged: download it again "
                         f"(the register in use is unchanged)")


@dataclass
class FileReport:
    """What one file brought in (counted as its batches go)."""

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


def _hidden(public: pa.Array, col: pa.Array) -> pa.Array:
    """``col`` where the row may be described, null elsewhere."""
    return pc.if_else(public, col, pa.scalar(None, pa.string()))


def _flag(col: pa.Array, value: str) -> pa.Array:
    return pc.fill_null(pc.equal(col, value), False)


def unit_rows(b: pa.RecordBatch, rep: FileReport) -> pa.Table:
    """Legal units as stored (``store.UNIT_COLUMNS``)."""
    purged = pc.fill_null(pc.equal(pc.utf8_lower(b.column("unitePurgeeUniteLegale")), "true"),
                          False)
    n_purged = pc.sum(purged).as_py() or 0
    if n_purged:
        rep.purged += n_purged
        b = b.filter(pc.invert(purged))
    public = _flag(b.column("statutDiffusionUniteLegale"), DIFFUSIBLE)
    rep.not_diffusible += b.num_rows - (pc.sum(public).as_py() or 0)
    person = _flag(b.column("categorieJuridiqueUniteLegale"), PERSONNE_PHYSIQUE)
    naf25 = (b.column("activitePrincipaleNAF25UniteLegale")
             if "activitePrincipaleNAF25UniteLegale" in b.schema.names
             else pa.nulls(b.num_rows, pa.string()))
    return pa.table({
        "siren": pc.cast(b.column("siren"), pa.int64()),
        "diffusible": public,
        "etat": _hidden(public, b.column("etatAdministratifUniteLegale")),
        "date_etat": _hidden(public, b.column("dateDebut")),
        "date_creation": _hidden(public, b.column("dateCreationUniteLegale")),
        "ape": _hidden(public, b.column("activitePrincipaleUniteLegale")),
        "nomenclature": _hidden(public, b.column("nomenclatureActivitePrincipaleUniteLegale")),
        "ape_naf25": _hidden(public, naf25),
        "categorie_juridique": _hidden(public, b.column("categorieJuridiqueUniteLegale")),
        "denomination": _hidden(pc.and_(public, pc.invert(person)),
                                b.column("denominationUniteLegale")),
        "nic_siege": _hidden(public, b.column("nicSiegeUniteLegale")),
    })


def etab_rows(b: pa.RecordBatch, rep: FileReport) -> pa.Table:
    """Establishments as stored (``store.ETAB_COLUMNS``): no place for one outside the
    diffusion."""
    public = _flag(b.column("statutDiffusionEtablissement"), DIFFUSIBLE)
    rep.not_diffusible += b.num_rows - (pc.sum(public).as_py() or 0)
    return pa.table({
        "siret": pc.cast(b.column("siret"), pa.int64()),
        "diffusible": public,
        "siege": _flag(b.column("etablissementSiege"), "true"),
        "etat": b.column("etatAdministratifEtablissement"),
        "code_postal": _hidden(public, b.column("codePostalEtablissement")),
        "commune": _hidden(public, b.column("libelleCommuneEtablissement")),
    })


STORED = {"unite_legale": unit_rows, "etablissement": etab_rows}


def stored_batches(kind: str, path: Path, header: list[str], rep: FileReport,
                   tick: Tick) -> Iterator[pa.Table]:
    """The file's rows as stored, batch after batch (bounded memory, whatever its size).

    ``header`` is the file's first line as read by ``importer.check_files`` (its names
    stripped), so the columns are found by name in any order.
    """
    wanted = [c for c in NEEDED[kind] + OPTIONAL[kind] if c in header]
    key, digits = KEYS[kind]
    bad_rows: list[tuple[int | None, str]] = []    # (line, what) of a malformed row

    def invalid(row) -> str:
        bad_rows.append((row.number, f"{row.actual_columns} fields where the header has "
                                     f"{row.expected_columns}"))
        return "error"

    with _raw(path) as raw:
        try:
            reader = pcsv.open_csv(
                raw,
                read_options=pcsv.ReadOptions(column_names=header, skip_rows=1,
                                              block_size=READ_BLOCK, use_threads=False),
                parse_options=pcsv.ParseOptions(invalid_row_handler=invalid),
                convert_options=pcsv.ConvertOptions(
                    include_columns=wanted, column_types={c: pa.string() for c in wanted},
                    strings_can_be_null=True, quoted_strings_can_be_null=True))
            line = 1
            for batch in reader:
                _check_keys(batch.column(key), digits, key, path.name, line)
                line += batch.num_rows
                rep.rows += batch.num_rows
                table = STORED[kind](batch, rep)
                rep.kept += table.num_rows
                yield table
                tick(rep.rows)
        except pa.ArrowInvalid as exc:
            if bad_rows:
                raise damaged(path.name, *bad_rows[0]) from None
            if "UTF8" in str(exc):
                raise RegisterError(f"{path}: not UTF-8 text; take the *_utf8 stock files "
                                    f"(StockUniteLegale_utf8.zip, "
                                    f"StockEtablissement_utf8.zip)") from None
            raise damaged(path.name, None, str(exc).splitlines()[0][:200]) from None
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise RegisterError(f"{path}: damaged zip ({exc}); download it again") from None


def _check_keys(col: pa.Array, digits: int, key: str, name: str, line: int) -> None:
    """Every number is ``digits`` digits, or the file is refused at the first that is not."""
    ok = pc.fill_null(pc.match_substring_regex(col, f"^[0-9]{{{digits}}}$"), False)
    if pc.all(ok).as_py():
        return
    first = pc.index(ok, False).as_py()
    raise damaged(name, line + first + 1,
                  f"{key} {col[first].as_py()!r} is not {digits} digits")


class _raw:
    """The file's bytes: a plain CSV, or the one CSV member of INSEE's zip, streamed."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self):
        try:
            if zipfile.is_zipfile(self.path):
                self._zip = zipfile.ZipFile(self.path)
                member = next(m for m in self._zip.namelist() if m.lower().endswith(".csv"))
                self._file = self._zip.open(member)
            else:
                self._file = open(self.path, "rb")
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
            raise RegisterError(f"{self.path}: damaged zip ({exc}); download it again") \
                from None
        return self._file

    def __exit__(self, *exc) -> None:
        self._file.close()
        if self._zip is not None:
            self._zip.close()
