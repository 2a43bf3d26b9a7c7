"""Sirene register: import throughput, peak memory, lookup latency (prints figures).

    .venv/bin/python bench/sirene_import.py [--units 1000000] [--lookup-rows 30000000]
        [--url postgresql://...] [--workdir DIR] [--json out.json]

1. Import: generated stock files in the official format (``callbot.sirene.testdata``,
   seed 0: ``--units`` legal units and their establishments, zipped like INSEE's) are
   imported by ``callbot.sirene.importer.import_files`` in a child process, as
   ``callbot sirene import`` does; reported: rows (both files) per second of the whole
   import, swap included, and its peak memory: the summed PSS of the import's processes
   (it forks one per file), sampled every 50 ms, and the largest RSS of one of them.
   SQLite by default, the PostgreSQL of ``--url`` otherwise.
2. Lookup: a register of ``--lookup-rows`` legal units and as many head-office
   establishments, with the importer's own tables and swap (``SqliteBuilder``), filled by
   SQL rather than from CSV (the CSV path is step 1; producing 30 million CSV rows would only
   measure the generator); then ``Register.lookup`` (what a call does: number check, unit,
   head office, label) of 20,000 random existing SIRENs, p50/p95/p99. The file is read
   through the page cache (the machine has room for it), as on a bot host after the first
   calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbot.config import load_config  # noqa: E402
from callbot.sirene.testdata import generate, luhn_key  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from callbot.config import load_config
from callbot.sirene.importer import import_files
config = load_config(sys.argv[1], env={})
t0 = time.monotonic()
report = import_files(config, [Path(p) for p in sys.argv[2:]])
print(json.dumps({"seconds": time.monotonic() - t0,
                  "rows": sum(f.rows for f in report.files),
                  "files": {f.kind: {"rows": f.rows, "rows_s": round(f.rate)}
                            for f in report.files},
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def config_file(folder: Path, url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "callbot.toml"
    path.write_text(f'[paths]\ndata = "{folder / "data"}"\n[transcripts]\nurl = "{url}"\n',
                    encoding="utf-8")
    return path


def bench_import(work: Path, units: int, url: str) -> dict:
    files = work / f"stock-{units}"
    ul, et = files / "StockUniteLegale_utf8.zip", files / "StockEtablissement_utf8.zip"
    if not (ul.exists() and et.exists()):
        t0 = time.monotonic()
        g = generate(files, units, seed=0)
        print(f"generated {g.units:,} legal units and {g.establishments:,} establishments "
              f"in {time.monotonic() - t0:.0f} s ({ul.stat().st_size / 1e6:.0f} + "
              f"{et.stat().st_size / 1e6:.0f} MB zipped)", flush=True)
    cfg = config_file(work, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg), str(ul), str(et)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    peak = [0]
    watcher = threading.Thread(target=_watch_pss, args=(proc, peak), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"import failed: {stderr[-2000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    out["children_maxrss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["peak_pss_mb"] = peak[0] / 1024
    out["rows_s"] = out["rows"] / out["seconds"]
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the importer forks one process per file)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _watch_pss(proc: subprocess.Popen, peak: list[int]) -> None:
    """Peak of the summed PSS (kB) of the import's processes, every 50 ms: the memory the
    whole import holds at once, pages shared after the fork counted once."""
    while proc.poll() is None:
        total = 0
        for p in _tree(proc.pid):
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            except (OSError, StopIteration):
                pass
        peak[0] = max(peak[0], total)
        time.sleep(0.05)


def _luhn_sql(x: str) -> str:
    """SQL for the Luhn key of the 8-digit number ``x`` (what makes a valid SIREN)."""
    terms = []
    for pos in range(8):                     # pos 0 = rightmost digit, doubled
        d = f"(({x} / {10 ** pos}) % 10)"
        terms.append(f"({d} * 2 - 9 * ({d} * 2 > 9))" if pos % 2 == 0 else d)
    return f"((10 - ({' + '.join(terms)}) % 10) % 10)"


def build_lookup_register(path: Path, rows: int) -> None:
    from callbot.sirene.store import SqliteBuilder

    b = SqliteBuilder(path)
    key = _luhn_sql("n")
    b.conn.execute("BEGIN")
    b.conn.execute(
        f"WITH RECURSIVE s(n) AS (SELECT 10000000 UNION ALL SELECT n + 3 FROM s "
        f"LIMIT {rows}) INSERT INTO unite_legale SELECT n * 10 + {key}, 1, "
        f"CASE WHEN n % 9 < 5 THEN 'A' ELSE 'C' END, '2015-06-01', '2009-03-12', "
        f"CASE n % 3 WHEN 0 THEN '56.10A' WHEN 1 THEN '62.01Z' ELSE '68.20B' END, "
        f"'NAFRev2', NULL, CASE WHEN n % 5 < 3 THEN '1000' ELSE '5710' END, "
        f"CASE WHEN n % 5 < 3 THEN NULL ELSE 'SOCIETE ' || n END, '00001' FROM s")
    b.conn.execute("INSERT INTO etablissement SELECT siren * 100000 + 1, 1, 1, etat, "
                   "'75011', 'PARIS 11' FROM unite_legale")
    b.conn.execute("COMMIT")
    b.finish({"imported_at": "bench", "unite_legale_rows": str(rows)})


def bench_lookup(work: Path, rows: int) -> dict:
    from callbot.sirene.lookup import Register

    cfg_path = config_file(work, "")
    config = load_config(cfg_path, env={})
    path = work / "data" / "sirene.sqlite3"
    marker = work / f"lookup-{rows}.built"
    if not marker.exists():
        t0 = time.monotonic()
        build_lookup_register(path, rows)
        marker.touch()
        print(f"built a register of {rows:,} units + {rows:,} establishments in "
              f"{time.monotonic() - t0:.0f} s ({path.stat().st_size / 1e9:.2f} GB)", flush=True)
    reg = Register.open(config)
    rng = random.Random(1)
    numbers = []
    for _ in range(20_000):
        n = 10_000_000 + 3 * rng.randrange(rows)
        numbers.append(f"{n:08d}" + luhn_key(f"{n:08d}"))
    for n in numbers[:2000]:                 # first-use costs (connection, statements)
        reg.lookup(n)
    times = []
    found = 0
    for n in numbers:
        t0 = time.perf_counter()
        a = reg.lookup(n)
        times.append((time.perf_counter() - t0) * 1000)
        found += a.found
    reg.close()
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]   # noqa: E731
    return {"rows": rows, "lookups": len(times), "found": found,
            "p50_ms": round(pick(0.50), 3), "p95_ms": round(pick(0.95), 3),
            "p99_ms": round(pick(0.99), 3), "file_gb": round(path.stat().st_size / 1e9, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=1_000_000)
    ap.add_argument("--lookup-rows", type=int, default=30_000_000)
    ap.add_argument("--url", default="", help="PostgreSQL for the import (default: SQLite)")
    ap.add_argument("--workdir", help="keep generated files here (default: a temp folder)")
    ap.add_argument("--skip-import", action="store_true")
    ap.add_argument("--skip-lookup", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sirene-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if not args.skip_import:
        r = bench_import(work, args.units, args.url)
        result["import"] = r
        print(f"import ({'PostgreSQL' if args.url else 'SQLite'}): {r['rows']:,} rows in "
              f"{r['seconds']:.1f} s = {r['rows_s']:,.0f} rows/s (target >= 200,000); "
              f"per file {r['files']}; peak memory of the whole import (its processes' "
              f"summed PSS) {r['peak_pss_mb']:.0f} MB (target <= 300); peak RSS of one "
              f"process {max(r['maxrss_kb'] / 1024, r['children_maxrss_mb']):.0f} MB",
              flush=True)
    if not args.skip_lookup:
        r = bench_lookup(work / "lookup", args.lookup_rows)
        result["lookup"] = r
        print(f"lookup on {r['rows']:,} units ({r['file_gb']} GB): p50 {r['p50_ms']} ms, "
              f"p95 {r['p95_ms']} ms, p99 {r['p99_ms']} ms over {r['lookups']:,} lookups "
              f"({r['found']:,} found; target p95 <= 2 ms)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
