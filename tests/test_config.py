"""The one TOML configuration: defaults, file, environment, and clear refusals."""

import pytest

from callbot.config import load_config
from callbot.errors import ConfigError


def test_embedded_defaults_load():
    c = load_config(env={})
    assert c.asr.engine == "auto" and c.endpointing.end_silence_ms == 700
    assert c.paths.kb.name == "kb" and c.paths.kb.is_absolute()


def test_file_then_environment(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[asr]\nengine = "whisper"\n[endpointing]\nend_silence_ms = 500\n')
    c = load_config(f, env={"CALLBOT_ENDPOINTING_END_SILENCE_MS": "650"})
    assert c.asr.engine == "whisper"
    assert c.endpointing.end_silence_ms == 650


@pytest.mark.parametrize("text, words", [
    ('[asr]\nengin = "vosk"\n', "asr.engin"),
    ('[asr]\nengine = "google"\n', "asr.engine"),
    ('[nope]\nx = 1\n', "[nope]"),
    ('[endpointing]\nend_silence_ms = "long"\n', "whole number"),
    ('[endpointing]\nno_input_ms = -5\n', "greater than 0"),
    ('[asr\nengine = 1\n', "not valid TOML"),
])
def test_bad_configuration_names_key_and_reason(tmp_path, text, words):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f, env={})
    assert words in str(e.value)


def test_bad_environment_variable():
    with pytest.raises(ConfigError, match="CALLBOT_ASR_ENGIN"):
        load_config(env={"CALLBOT_ASR_ENGIN": "vosk"})
    with pytest.raises(ConfigError, match="whole number"):
        load_config(env={"CALLBOT_ASR_BEAM_SIZE": "lots"})


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/callbot.toml", env={})
