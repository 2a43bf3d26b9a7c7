"""The end-of-turn model (Smart Turn v3.2) on real French speech, alone and in a call."""

import dataclasses

import numpy as np
import pytest

from callbot.audio import read_wav, split_frames
from callbot.events import CallAudio, Final
from callbot.session import CallSession, Engines
from callbot.smartturn import load_smart_turn, log_mel

SOUNDS = "/usr/share/asterisk/sounds/fr"


@pytest.fixture(scope="module")
def model(config):
    return load_smart_turn(config.paths.models)


def test_features_are_whispers_log_mel_of_the_last_8_seconds():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, 16000 * 10).astype(np.float32)
    f = log_mel(x)
    assert f.shape == (80, 800) and f.dtype == np.float32
    assert -1.5 < f.min() and f.max() <= 1.5 + 1e-6
    # only the last 8 s count; a shorter input is padded in front
    assert np.allclose(log_mel(x), log_mel(x[-16000 * 8:]))
    assert not np.allclose(log_mel(x[:16000]), log_mel(x[-16000:]))


def test_model_scores_real_speech_between_0_and_1(model):
    scores = []
    for name in ("vm-goodbye", "conf-getpin", "vm-intro", "auth-thankyou"):
        pcm = read_wav(f"{SOUNDS}/{name}.wav")
        p = model.done(pcm, 8000)
        assert 0.0 <= p <= 1.0
        assert model.done(pcm.astype(np.float32) / 32768, 8000) == pytest.approx(p, abs=1e-4)
        scores.append(p)
    assert len({round(s, 3) for s in scores}) > 1          # it reads the audio


def test_a_call_with_the_voice_model_reports_its_verdict(config):
    ep = dataclasses.replace(config.endpointing, turn_model="smart-turn-v3.2",
                             quick_end="off")
    engines = Engines.load(dataclasses.replace(config, endpointing=ep))
    assert engines.turn_model is not None
    finals = []

    class Finals:
        def on_event(self, event):
            if isinstance(event, Final):
                finals.append(event)
            assert not isinstance(event, CallAudio) or len(event.caller) == 320

    s = CallSession(engines, "voice", observers=[Finals()])
    s.start()
    s.playback.flush()
    pcm = np.concatenate([read_wav(f"{SOUNDS}/conf-getpin.wav"), np.zeros(8 * 2000, np.int16)])
    for f in split_frames(pcm.tobytes(), 8000, 20):
        s.push(f)
    assert finals and finals[0].turn_done is not None and 0 <= finals[0].turn_done <= 1
    assert finals[0].text
