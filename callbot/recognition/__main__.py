"""``python -m callbot.recognition --socket PATH``: the machine's recognition service.

Started and supervised by ``callbot serve``; runnable alone for workers started by hand.
Prints JSON events on stdout (``ready`` once the models are loaded and warm)."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from ..errors import CallbotError


def main(argv: list[str] | None = None) -> int:
    from ..config import load_config
    from .server import RecognitionServer

    p = argparse.ArgumentParser(prog="python -m callbot.recognition",
                                description="Shared speech recognition for every worker "
                                            "of this machine.")
    p.add_argument("--config", help="TOML configuration (default: embedded, or $CALLBOT_CONFIG)")
    p.add_argument("--socket", help="Unix socket to listen on (default: recognition.socket, "
                                    "or paths.data/recognition.sock)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        config = load_config(args.config)
        path = args.socket or config.recognition.socket or str(
            config.paths.data / "recognition.sock")
        server = RecognitionServer(config, path, queue_max=config.recognition.queue)
        warm(server)           # before listening: a connected worker is answered at once
        server.bind()
    except CallbotError as exc:
        print(f"callbot recognition: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"callbot recognition: cannot listen on {path}: {exc.strerror or exc} (set "
              f"recognition.socket to a shorter path, at most 107 bytes)", file=sys.stderr)
        return 2

    def stop(signum, frame) -> None:
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.log("ready", engine=server.asr.name, model=server.asr.model, socket=str(path),
               load_s=round(time.perf_counter() - t0, 2))
    server.serve_forever()
    server.log("stopped")
    return 0


def warm(server) -> None:
    """One decode on the bot's own speech before the first call (threads, buffers)."""
    from ..tts import cache_root, load_tts
    from ..tts.cache import SpeechCache

    try:
        tts = SpeechCache(load_tts(server.config), cache_root(server.config))
        speech = tts.get("Bonjour, je voudrais mon numéro Siret.")
    except CallbotError:
        return                       # no voice installed: the first call warms it
    rec = server.asr.recognizer(8000)
    rec.accept(speech)
    rec.finish()
    rec.close()


if __name__ == "__main__":
    sys.exit(main())
