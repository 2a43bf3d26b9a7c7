"""One recognition service per machine (:mod:`.server`), and the engines a worker uses to
reach it (:mod:`.client`); :func:`remote_engines` is what :class:`callbot.session.Engines`
calls when ``recognition.socket`` is set (``callbot serve`` sets it for its workers)."""

from __future__ import annotations

from typing import Any, Callable

from ..config import Config


def remote_engines(config: Config, log: Callable[..., None] | None = None
                   ) -> tuple[Any, Callable[[str], Any]]:
    """(ASR engine, encoder loader) served by the machine's recognition service.

    Waits ``recognition.connect_wait_s`` for the service (it loads its models while the
    workers load theirs); raises :class:`~callbot.errors.ModelMissing` with the fix when it
    never answers, since a worker that cannot recognise anything must not take calls."""
    from ..asr import load_asr
    from ..embedding import load_encoder
    from ..errors import ModelMissing
    from .client import (RemoteEncoder, RemoteStreamEngine, RemoteWhisperEngine,
                         ServiceClient, ServiceUnavailable)

    rc = config.recognition
    client = ServiceClient(rc.socket, rc.timeout_s, log)
    try:
        hello = client.connect(wait_s=rc.connect_wait_s)
    except ServiceUnavailable as exc:
        raise ModelMissing(f"{exc}; start it with `python -m callbot.recognition` (or let "
                           f"`callbot serve` start it), or set recognition.socket = \"\" "
                           f"to load the models in this process") from None
    local = lambda: load_asr(config)   # noqa: E731 - the fallback, loaded on first need
    cls = RemoteWhisperEngine if hello.get("batch") else RemoteStreamEngine
    asr = cls(client, local)

    def encoder(name: str) -> Any:
        return RemoteEncoder(client, name, lambda: load_encoder(name, config.paths.models,
                                                                config.asr.threads))

    return asr, encoder
