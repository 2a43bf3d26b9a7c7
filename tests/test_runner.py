"""The per-call runner thread: closing steps wait for its last step."""

from __future__ import annotations

import dataclasses
import queue
import threading

import numpy as np
import pytest

from callbot.audio import read_wav, split_frames
from callbot.events import CallAudio, TurnDecided
from callbot.session import Engines
from telephony.runner import CallRunner

SOUNDS = "/usr/share/asterisk/sounds/fr"


@pytest.fixture(scope="module")
def engines(config):
    # the quick end off: the turn always ends with the recognizer's full decode (finish)
    ep = dataclasses.replace(config.endpointing, quick_end="off")
    return Engines.load(dataclasses.replace(config, endpointing=ep))


class Turns(list):
    """Records the caller turns that reach an output (as the transcript recorder would)."""

    def on_event(self, event):
        if isinstance(event, TurnDecided) and event.turn.caller:
            self.append(event.turn.caller)
        assert not isinstance(event, CallAudio) or event.caller


def test_a_caller_who_hangs_up_during_the_decode_is_still_written(engines):
    """The hang-up comes while the last words are being decoded: the closing step (the
    transcript's close) runs after that decode, so the words reach the recorder first."""
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    pcm = np.concatenate([read_wav(f"{SOUNDS}/vm-goodbye.wav"), np.zeros(8 * 1000, np.int16)])
    for f in split_frames(pcm.tobytes(), 8000, 20):
        inbox.put(f)
    turns = Turns()
    runner = CallRunner(1, engines, "hangup-during-decode", inbox, post=lambda a: None,
                        log=lambda *a, **k: None, outputs=[turns])
    order: list[str] = []
    decoding = threading.Event()
    recognizer = runner.session.listener.recognizer
    finish = recognizer.finish

    def slow_finish():
        decoding.set()                      # the SIP side hangs up now, mid-decode
        result = finish()
        order.append("decoded")
        return result

    recognizer.finish = slow_finish
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert decoding.wait(60)
    runner.stop.set()                       # what CallTeardown does on BYE ...
    runner.when_done(lambda: order.append(f"closed with {list(turns)}"))   # ... then this
    thread.join(60)
    assert len(turns) == 1 and order == ["decoded", f"closed with {list(turns)}"], order
    # once the thread is done, a closing step runs at once
    runner.when_done(lambda: order.append("late"))
    assert order[-1] == "late"
