"""PCM helpers shared by every stage: the core speaks 16-bit mono little-endian PCM.

Telephony runs at 8 kHz; engines may want 16 kHz (Whisper) or produce 22.05 kHz (espeak-ng,
Piper). Conversions live here so that every stage resamples the same way.
"""

from __future__ import annotations

import io
import math
import wave
from math import gcd
from pathlib import Path

import numpy as np

from .errors import AudioError

TELEPHONY_RATE = 8000
# The one frame length of the project: the core consumes and produces 20 ms frames, the SIP
# side's conference bridge and call ports run at it, the call clock counts it. (RTP packets
# are 20 ms too, the telephony norm, but pjsua repacketizes if a peer asks otherwise.)
FRAME_MS = 20


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of float or int16 samples; returns float32 in the input scale."""
    x = np.asarray(samples, dtype=np.float32)
    if src_rate == dst_rate or x.size == 0:
        return x
    from scipy.signal import resample_poly

    g = gcd(src_rate, dst_rate)
    return resample_poly(x, dst_rate // g, src_rate // g).astype(np.float32)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Clip float samples in int16 scale to int16."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def pcm_to_array(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def read_wav(path: str | Path, rate: int = TELEPHONY_RATE) -> np.ndarray:
    """Read a WAV file of any rate, width or channel count as int16 mono at ``rate``.

    Stereo is mixed down (a caller recording may come as two channels); every other
    problem is an AudioError naming the file, never a traceback.
    """
    from scipy.io import wavfile

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise AudioError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{p}: is a folder, not a WAV file") from None
    except OSError as exc:
        raise AudioError(f"{p}: cannot read ({exc.strerror})") from None
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise AudioError(f"{p}: not a WAV file (expected a RIFF/WAVE header)")
    try:
        src_rate, samples = wavfile.read(io.BytesIO(data))
    except Exception as exc:  # scipy raises ValueError, struct.error, EOFError...
        raise AudioError(f"{p}: unreadable WAV ({exc}); convert it to PCM, e.g. "
                         f"'sox {p.name} -r 8000 -c 1 -b 16 out.wav'") from None
    samples = np.asarray(samples)
    if samples.ndim == 2:
        if samples.shape[1] == 0:
            raise AudioError(f"{p}: WAV file with no channel")
        samples = samples.astype(np.float64).mean(axis=1)
    kind = np.asarray(samples).dtype
    if kind == np.uint8:
        x = (samples.astype(np.float32) - 128.0) * 256.0
    elif kind == np.int16:
        x = samples.astype(np.float32)
    elif kind == np.int32:
        x = samples.astype(np.float32) / 65536.0
    elif kind.kind == "f":
        x = samples.astype(np.float32)
        if x.size and np.nanmax(np.abs(x)) <= 1.5:  # float WAV in [-1, 1]
            x = x * 32767.0
    else:
        raise AudioError(f"{p}: unsupported sample format {kind}")
    if x.size == 0:
        raise AudioError(f"{p}: the WAV file holds no audio")
    if not 1000 <= src_rate <= 384000:
        raise AudioError(f"{p}: implausible sample rate {src_rate} Hz")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{p}: the WAV file holds invalid samples (NaN or infinity)")
    return to_int16(resample(x, int(src_rate), rate))


def write_wav(path: str | Path, samples: np.ndarray | bytes, rate: int = TELEPHONY_RATE,
              channels: int = 1) -> None:
    """Write int16 PCM (mono, or interleaved when ``channels`` > 1)."""
    if isinstance(samples, (bytes, bytearray)):
        data = bytes(samples)
    else:
        data = np.asarray(samples, dtype="<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)


def frame_bytes(rate: int, frame_ms: int) -> int:
    return rate * frame_ms // 1000 * 2


def split_frames(pcm: bytes, rate: int, frame_ms: int) -> list[bytes]:
    """Cut PCM into whole frames, padding the last one with silence."""
    n = frame_bytes(rate, frame_ms)
    if len(pcm) % n:
        pcm = pcm + b"\x00" * (n - len(pcm) % n)
    return [pcm[i:i + n] for i in range(0, len(pcm), n)]


def level_db(pcm: bytes) -> float:
    """RMS level of a frame in dBFS (-100 for digital silence)."""
    x = pcm_to_array(pcm).astype(np.float32)
    if x.size == 0:
        return -100.0
    rms = math.sqrt(float(np.dot(x, x)) / x.size)
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -100.0
