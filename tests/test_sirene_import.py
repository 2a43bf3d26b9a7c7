"""`callbot sirene import` on files in the official stock format (CSV and zip), into real
SQLite and PostgreSQL: the header rules, what is kept, the atomic swap while lookups run in
another thread and another process, carry-over, damaged files, progress."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from callbot.config import Config
from callbot.sirene.importer import import_files
from callbot.sirene.lookup import Register
from callbot.sirene.schema import (ETABLISSEMENT_COLUMNS, ETABLISSEMENT_NEEDED,
                                   UNITE_LEGALE_COLUMNS, UNITE_LEGALE_NEEDED, SchemaError)
from callbot.sirene.store import RegisterError
from callbot.sirene.testdata import SURNAMES, generate, luhn_key, write_stock

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [sys.executable, "-m", "callbot"]


@pytest.fixture(params=["sqlite", "postgresql"])
def cfg(request, config: Config, tmp_path: Path) -> Config:
    url = request.getfixturevalue("pg_server").new_database() \
        if request.param == "postgresql" else ""
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path / "data"),
        transcripts=dataclasses.replace(config.transcripts, url=url))


def read_csv(path: Path) -> list[dict[str, str]]:
    """A stock file as dicts, read apart from the importer (the test's own expectations)."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(zf.namelist()[0]).decode("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_official_headers():
    assert len(UNITE_LEGALE_COLUMNS) == 35 and len(ETABLISSEMENT_COLUMNS) == 54
    assert UNITE_LEGALE_COLUMNS[:3] == ("siren", "statutDiffusionUniteLegale",
                                        "unitePurgeeUniteLegale")
    assert ETABLISSEMENT_COLUMNS[:4] == ("siren", "nic", "siret", "statutDiffusionEtablissement")
    assert set(UNITE_LEGALE_NEEDED) <= set(UNITE_LEGALE_COLUMNS)
    assert set(ETABLISSEMENT_NEEDED) <= set(ETABLISSEMENT_COLUMNS)
    # no column naming or describing a person is ever read
    personal = {c for c in UNITE_LEGALE_COLUMNS
                if c.startswith(("nomUniteLegale", "nomUsage", "prenom", "pseudonyme", "sexe"))}
    assert len(personal) == 9 and not personal & set(UNITE_LEGALE_NEEDED)


def test_generated_files_have_the_official_header(tmp_path):
    g = generate(tmp_path, 50, seed=3)
    with zipfile.ZipFile(g.unite_legale) as zf:
        assert zf.namelist() == ["StockUniteLegale_utf8.csv"]
        first = zf.read("StockUniteLegale_utf8.csv").decode().splitlines()[0]
    assert first.split(",") == list(UNITE_LEGALE_COLUMNS)
    with zipfile.ZipFile(g.etablissement) as zf:
        first = zf.read("StockEtablissement_utf8.csv").decode().splitlines()[0]
    assert first.split(",") == list(ETABLISSEMENT_COLUMNS)
    # deterministic by seed
    again = generate(tmp_path / "again", 50, seed=3)
    assert read_csv(again.unite_legale) == read_csv(g.unite_legale)
    assert read_csv(generate(tmp_path / "other", 50, seed=4).unite_legale) != \
        read_csv(g.unite_legale)


def test_generated_distributions(tmp_path):
    g = generate(tmp_path, 3000, seed=5, zipped=False)
    rows = read_csv(g.unite_legale)
    n = len(rows)
    share = lambda pred: sum(map(pred, rows)) / n       # noqa: E731
    assert 0.55 <= share(lambda r: r["categorieJuridiqueUniteLegale"] == "1000") <= 0.65
    assert 0.01 <= share(lambda r: r["statutDiffusionUniteLegale"] == "P") <= 0.05
    assert 0.50 <= share(lambda r: r["etatAdministratifUniteLegale"] == "A") <= 0.60
    assert 0.003 <= share(lambda r: r["unitePurgeeUniteLegale"] == "true") <= 0.02
    assert len({r["activitePrincipaleUniteLegale"] for r in rows}) > 300
    from callbot.siren import luhn_ok
    sites = read_csv(g.etablissement)
    assert all(luhn_ok(r["siren"]) for r in rows)
    assert all(luhn_ok(r["siret"]) and r["siret"] == r["siren"] + r["nic"] for r in sites)
    assert sorted(r["siren"] for r in rows) == [r["siren"] for r in rows]    # as INSEE sorts


def test_import_matches_the_files(cfg, tmp_path):
    g = generate(tmp_path / "files", 1500, seed=7)
    calls = []
    report = import_files(cfg, [g.etablissement, g.unite_legale],
                          progress=lambda label, done, total: calls.append((label, done, total)))
    units, sites = read_csv(g.unite_legale), read_csv(g.etablissement)
    ul = next(f for f in report.files if f.kind == "unite_legale")
    et = next(f for f in report.files if f.kind == "etablissement")
    purged = sum(r["unitePurgeeUniteLegale"] == "true" for r in units)
    assert purged > 0
    assert (ul.rows, ul.kept, ul.purged) == (len(units), len(units) - purged, purged)
    assert (et.rows, et.kept) == (len(sites), len(sites))
    assert calls[-1][1:] == (len(sites), len(sites))
    assert all("rows/s" in label for label, _, _ in calls)
    heads = {r["siret"]: r for r in sites if r["etablissementSiege"] == "true"}
    reg = Register.open(cfg)
    try:
        info = reg.info()
        assert info["unite_legale_rows"] == str(len(units) - purged)
        for r in units:
            a = reg.lookup(r["siren"])
            if r["unitePurgeeUniteLegale"] == "true":
                assert not a.found, r["siren"]
                continue
            assert a.found and a.diffusible == (r["statutDiffusionUniteLegale"] == "O")
            if not a.diffusible:
                assert a.ape is None and a.siege is None and a.etat_administratif is None
                continue
            pp = r["categorieJuridiqueUniteLegale"] == "1000"
            assert a.personne_physique == pp
            assert a.etat_administratif == r["etatAdministratifUniteLegale"]
            assert a.date_etat == r["dateDebut"] and a.ape == r["activitePrincipaleUniteLegale"]
            assert a.ape_label                       # every generated code is a real one
            assert a.ape_naf25 == (r["activitePrincipaleNAF25UniteLegale"] or None)
            assert a.ape_naf25 is None or a.ape_naf25_label
            head = heads[r["siren"] + r["nicSiegeUniteLegale"]]
            if pp:
                assert a.denomination is None and a.siege is None
            else:
                assert a.denomination == r["denominationUniteLegale"]
                assert (a.siege.code_postal, a.siege.commune) == (
                    head["codePostalEtablissement"], head["libelleCommuneEtablissement"])
    finally:
        reg.close()
    if cfg.transcripts.url == "":
        raw = (cfg.paths.data / "sirene.sqlite3").read_bytes()
        named = {r["nomUniteLegale"] for r in units if r["nomUniteLegale"] not in ("", "[ND]")}
        assert named and named <= set(SURNAMES)
        assert not [s for s in named if s.encode() in raw]


def test_extra_and_reordered_columns_and_plain_csv(cfg, tmp_path):
    s = "10000001" + luhn_key("10000001")
    nic = "0001" + luhn_key(s + "0001")
    cols = list(reversed(UNITE_LEGALE_COLUMNS)) + ["colonneFuture2027"]
    path = tmp_path / "ul.csv"
    values = {"siren": s, "statutDiffusionUniteLegale": "O", "etatAdministratifUniteLegale": "A",
              "categorieJuridiqueUniteLegale": "5499", "activitePrincipaleUniteLegale": "62.01Z",
              "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
              "nicSiegeUniteLegale": nic, "colonneFuture2027": "x"}
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerow([values.get(c, "") for c in cols])
    import_files(cfg, [path])
    reg = Register.open(cfg)
    try:
        a = reg.lookup(s)
        assert a.found and a.ape_label == "Programmation informatique"
    finally:
        reg.close()


def _columns_without(kind_cols, missing):
    return [c for c in kind_cols if c != missing]


@pytest.mark.parametrize("missing", ["nicSiegeUniteLegale", "statutDiffusionUniteLegale",
                                     "unitePurgeeUniteLegale"])
def test_file_lacking_a_needed_column_is_refused_by_name(cfg, tmp_path, missing):
    good = generate(tmp_path / "good", 40, seed=1)
    import_files(cfg, [good.unite_legale, good.etablissement])
    before = read_csv(good.unite_legale)[0]["siren"]
    bad = tmp_path / "bad.csv"
    with open(bad, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        cols = _columns_without(UNITE_LEGALE_COLUMNS, missing)
        w.writerow(cols)
        w.writerow(["123456789"] + [""] * (len(cols) - 1))
    with pytest.raises(SchemaError) as err:
        import_files(cfg, [bad])
    assert missing in str(err.value) and "StockUniteLegale" in str(err.value)
    reg = Register.open(cfg)
    try:
        assert reg.lookup(before).found            # the register in use is unchanged
    finally:
        reg.close()


def test_establishment_file_lacking_a_column(cfg, tmp_path):
    bad = tmp_path / "et.csv"
    bad.write_text(",".join(_columns_without(ETABLISSEMENT_COLUMNS, "codePostalEtablissement"))
                   + "\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="codePostalEtablissement"):
        import_files(cfg, [bad])


def test_not_a_stock_file_and_two_of_a_kind(cfg, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    with pytest.raises(SchemaError, match="not a Sirene stock file"):
        import_files(cfg, [other])
    g = generate(tmp_path / "g", 10, seed=2)
    with pytest.raises(SchemaError, match="both StockUniteLegale"):
        import_files(cfg, [g.unite_legale, g.unite_legale])
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(RegisterError, match="empty file"):
        import_files(cfg, [empty])
    with pytest.raises(RegisterError, match="no such file"):
        import_files(cfg, [tmp_path / "absent.zip"])


def test_damaged_file_keeps_the_register_in_use(cfg, tmp_path):
    g = generate(tmp_path / "g", 60, seed=9, zipped=False)
    import_files(cfg, [g.unite_legale, g.etablissement])
    rows = g.unite_legale.read_text(encoding="utf-8").splitlines()
    first = rows[1].split(",")[0]
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("\n".join(rows[:30] + [rows[30] + ",extra"] + rows[31:]) + "\n",
                       encoding="utf-8")
    with pytest.raises(RegisterError, match="line 31: 36 fields where the header has 35"):
        import_files(cfg, [damaged])
    with pytest.raises(RegisterError, match="line 31: 36 fields where the header has 35"):
        import_files(cfg, [damaged, g.etablissement])       # both files at once
    if cfg.transcripts.url == "":                             # nothing left behind
        assert sorted(p.name for p in cfg.paths.data.iterdir()) == [
            "sirene.sqlite3", "sirene.sqlite3.import-lock"]
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("\n".join(rows[:5] + [rows[5] + "é"]).encode("latin-1"))
    with pytest.raises(RegisterError, match="not UTF-8"):
        import_files(cfg, [latin])
    reg = Register.open(cfg)
    try:
        assert reg.lookup(first).found
        assert reg.info()["unite_legale_file"] == g.unite_legale.name
    finally:
        reg.close()


def test_one_file_carries_the_other_over(cfg, tmp_path):
    g = generate(tmp_path / "g", 80, seed=11)
    import_files(cfg, [g.unite_legale, g.etablissement])
    company = next(r for r in read_csv(g.unite_legale)
                   if r["categorieJuridiqueUniteLegale"] != "1000"
                   and r["statutDiffusionUniteLegale"] == "O"
                   and r["unitePurgeeUniteLegale"] == "")
    report = import_files(cfg, [g.unite_legale])
    assert report.carried_over == ["etablissement"] and report.missing == []
    reg = Register.open(cfg)
    try:
        assert reg.lookup(company["siren"]).siege is not None
    finally:
        reg.close()


def _units(n: int, etat: str, ape: str) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        head = f"{20_000_000 + i * 3:08d}"
        s = head + luhn_key(head)
        out.append({"siren": s, "statutDiffusionUniteLegale": "O",
                    "etatAdministratifUniteLegale": etat, "dateDebut": "2020-01-01",
                    "categorieJuridiqueUniteLegale": "5710", "denominationUniteLegale": "X",
                    "activitePrincipaleUniteLegale": ape,
                    "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
                    "nicSiegeUniteLegale": "00011"})
    return out


OBSERVER = r"""
import json, pathlib, sys
from callbot.config import load_config
from callbot.sirene.lookup import Register
reg = Register.open(load_config(sys.argv[1], env={}))
numbers, stop = sys.argv[2].split(","), pathlib.Path(sys.argv[3])
seen, i = {}, 0
while not stop.exists():
    a = reg.lookup(numbers[i % len(numbers)])
    key = f"{a.found}/{a.etat_administratif}/{a.ape}"
    seen[key] = seen.get(key, 0) + 1
    i += 1
    if i == 1:
        print("ready", flush=True)
print(json.dumps(seen), flush=True)
"""


def test_lookups_during_an_import_see_old_or_new(cfg, tmp_path):
    """Another thread and another process look up all along monthly imports: every answer
    is the old register's or the new one's, and no lookup fails."""
    old = write_stock(tmp_path / "old.zip", "unite_legale", _units(4500, "A", "56.10A"))
    new = write_stock(tmp_path / "new.zip", "unite_legale", _units(4500, "C", "62.01Z"))
    import_files(cfg, [old])
    numbers = [r["siren"] for r in _units(4500, "A", "")][::450]
    allowed = {"True/A/56.10A", "True/C/62.01Z"}

    seen: dict[str, int] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    started = threading.Event()

    def watch() -> None:
        reg = Register.open(cfg)
        try:
            i = 0
            while not stop.is_set():
                a = reg.lookup(numbers[i % len(numbers)])
                key = f"{a.found}/{a.etat_administratif}/{a.ape}"
                seen[key] = seen.get(key, 0) + 1
                i += 1
                started.set()
        except BaseException as exc:    # noqa: BLE001 - the assertion below reports it
            errors.append(exc)
        finally:
            started.set()
            reg.close()

    toml = tmp_path / "cfg.toml"
    toml.write_text(f'[paths]\ndata = "{cfg.paths.data}"\n[transcripts]\n'
                    f'url = "{cfg.transcripts.url}"\n', encoding="utf-8")
    stop_file = tmp_path / "stop"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    proc = subprocess.Popen([sys.executable, "-c", OBSERVER, str(toml), ",".join(numbers),
                             str(stop_file)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        assert started.wait(30)
        for _ in range(3):
            import_files(cfg, [new])
            import_files(cfg, [old])
        import_files(cfg, [new])
        time.sleep(0.5)                      # both watchers read the last import too
    finally:
        stop_file.touch()
        stop.set()
        thread.join(timeout=30)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    in_process = json.loads(out.strip().splitlines()[-1])
    assert not errors, errors
    assert set(seen) == allowed, seen
    assert set(in_process) == allowed, in_process
    assert sum(in_process.values()) > 100 and sum(seen.values()) > 100
    reg = Register.open(cfg)
    try:
        assert reg.lookup(numbers[0]).etat_administratif == "C"
    finally:
        reg.close()


def _cli(cfg_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    return subprocess.run(CALLBOT + ["--config", str(cfg_path), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_command(tmp_path):
    cfg_path = tmp_path / "callbot.toml"
    cfg_path.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n', encoding="utf-8")
    g = generate(tmp_path / "g", 200, seed=13)
    r = _cli(cfg_path, "sirene", "import", str(g.unite_legale), str(g.etablissement))
    assert r.returncode == 0, r.stderr
    assert "StockUniteLegale_utf8.zip: 200 rows" in r.stdout and "rows/s" in r.stdout
    assert f"register {tmp_path / 'data' / 'sirene.sqlite3'} replaced" in r.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(_columns_without(UNITE_LEGALE_COLUMNS, "dateDebut")) + "\n",
                   encoding="utf-8")
    r = _cli(cfg_path, "sirene", "import", str(bad))
    assert r.returncode == 1 and "dateDebut" in r.stderr and "Traceback" not in r.stderr
