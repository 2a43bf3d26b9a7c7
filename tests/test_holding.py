"""No dead air: the holding prompt when an answer is late, never twice, never when on time."""

import dataclasses
import threading
import time

import numpy as np
import pytest

from callbot.audio import read_wav, split_frames
from callbot.events import CallAudio, HeldOn, TurnDecided
from callbot.holding import Alarm
from callbot.session import CallSession, Engines

SOUNDS = "/usr/share/asterisk/sounds/fr"
SILENCE = b"\x00" * 320


class Events(list):
    def on_event(self, event):
        if not isinstance(event, CallAudio):
            self.append(event)


@pytest.fixture(scope="module")
def engines(config):
    return Engines.load(config)


def with_hold(engines, hold_after_ms, quick_end="off"):
    c = engines.config
    ep = dataclasses.replace(c.endpointing, hold_after_ms=hold_after_ms, quick_end=quick_end)
    return dataclasses.replace(engines, config=dataclasses.replace(c, endpointing=ep))


def speak(session, wav, then_ms=1500):
    """The caller says ``wav`` after the greeting was played, then is silent."""
    session.start()
    session.playback.flush()
    pcm = read_wav(wav)
    frames = split_frames(np.concatenate([pcm, np.zeros(8 * then_ms, np.int16)]).tobytes(),
                          8000, 20)
    for f in frames:
        session.push(f)


def test_a_late_answer_is_preceded_by_the_holding_prompt_once(engines):
    # 300 ms is shorter than the end-of-turn silence (700 ms) itself: the answer is late
    # whatever the machine, so the prompt must come, once, before the answer.
    held = with_hold(engines, 300)
    events = Events()
    s = CallSession(held, "late", observers=[events])
    speak(s, f"{SOUNDS}/vm-goodbye.wav")
    kinds = [type(e) for e in events]
    assert kinds.count(HeldOn) == 1
    hold = next(e for e in events if isinstance(e, HeldOn))
    answer = [e for e in events if isinstance(e, TurnDecided) and e.turn.caller]
    assert answer and kinds.index(HeldOn) < events.index(answer[0])
    assert hold.text == engines.kb.prompts["holding"] and hold.waited_ms >= 300
    # what the caller hears first is the holding prompt, then the answer
    prompt = held.tts.get(engines.kb.prompts["holding"])
    heard = b"".join(s.pull() for _ in range(len(s.playback.frames)))
    assert heard.startswith(prompt)
    assert len(heard) > len(prompt) + 8000        # the answer follows (over half a second)
    s.close()


def test_an_answer_on_time_gets_no_holding_prompt(engines):
    # 5 s: far beyond any decode of a short word; the alarm is armed, then cancelled
    events = Events()
    s = CallSession(with_hold(engines, 5000), "on-time", observers=[events])
    speak(s, f"{SOUNDS}/vm-goodbye.wav")
    assert [e for e in events if isinstance(e, TurnDecided) and e.turn.caller]
    assert not [e for e in events if isinstance(e, HeldOn)]
    time.sleep(0.05)
    assert not s._hold_armed
    s.close()


def test_holding_off_when_zero_or_without_the_prompt(engines):
    events = Events()
    s = CallSession(with_hold(engines, 0), "off", observers=[events])
    speak(s, f"{SOUNDS}/vm-goodbye.wav")
    assert not [e for e in events if isinstance(e, HeldOn)]
    kb = dataclasses.replace(engines.kb, prompts={k: v for k, v in engines.kb.prompts.items()
                                                  if k != "holding"})
    events = Events()
    s = CallSession(dataclasses.replace(with_hold(engines, 300), kb=kb), "no-prompt",
                    observers=[events])
    speak(s, f"{SOUNDS}/vm-goodbye.wav")
    assert not [e for e in events if isinstance(e, HeldOn)]


def test_alarm_runs_the_latest_deadline_of_each_key_once():
    alarm = Alarm()
    fired: list[str] = []
    done = threading.Event()
    now = time.monotonic()
    alarm.set("a", now + 0.05, lambda: fired.append("a-old"))
    alarm.set("a", now + 0.10, lambda: fired.append("a"))         # replaces
    alarm.set("b", now + 0.02, lambda: fired.append("b"))
    alarm.set("c", now + 0.03, lambda: fired.append("c"))
    alarm.cancel("c")
    alarm.set("d", now + 0.15, lambda: (fired.append("d"), done.set()))
    alarm.set("e", now + 0.01, lambda: 1 / 0)                    # a failing callback
    assert done.wait(5)
    assert fired == ["b", "a", "d"]


def test_no_holding_prompt_during_a_pause_within_the_turn(engines):
    """A pause inside the caller's turn, while the call's thread falls behind (as under
    load), never brings the prompt: only the end of the turn arms it."""
    events = Events()
    s = CallSession(with_hold(engines, 300), "pause", observers=[events])
    s.start()
    s.playback.flush()
    word = read_wav(f"{SOUNDS}/vm-goodbye.wav")
    for f in split_frames(np.concatenate([word, np.zeros(8 * 400, np.int16)]).tobytes(),
                          8000, 20):
        s.push(f)
    time.sleep(0.6)                                     # the thread stalls mid-turn
    resumed_ms = s.clock_ms
    for f in split_frames(np.concatenate([word, np.zeros(8 * 1500, np.int16)]).tobytes(),
                          8000, 20):
        s.push(f)
    held = [e for e in events if isinstance(e, HeldOn)]
    assert len(held) <= 1 and all(e.at_ms > resumed_ms + 500 for e in held)
    s.close()
