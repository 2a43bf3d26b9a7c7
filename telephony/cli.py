"""``callbot`` subcommands of the SIP side, added through the "callbot.commands" entry point.

The core's parser calls :func:`register` with its subparsers object; the core never
imports this package. Commands: ``call`` (the scripted test caller), ``worker`` (one SIP
worker process, same as ``python -m telephony.worker``), ``serve`` (``workers.count``
workers under a supervisor).
"""

from __future__ import annotations

import argparse


class _TurnAction(argparse.Action):
    """--wav and --dtmf keep their command-line order: they are the caller's turns."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .caller import Turn

        turns = list(getattr(namespace, "turns", None) or [])
        turns.append(Turn(self.dest.split("_", 1)[1], values))
        namespace.turns = turns


def cmd_call(args) -> int:
    from .caller import CallerOptions, run

    opts = CallerOptions(uri=args.uri, turns=args.turns or [], record=args.record,
                         timeout_s=args.timeout, silence_ms=args.silence_ms, bind=args.bind,
                         refuse_transfer=args.refuse_transfer, dtmf_method=args.dtmf_method,
                         hangup_after_turns_s=args.hangup_after,
                         transfer_hold_s=args.transfer_hold, log_level=args.log_level,
                         codecs=tuple(c.strip() for c in args.codecs.split(",") if c.strip()))
    return run(opts)


def cmd_worker(args) -> int:
    from .worker import main

    argv = []
    if getattr(args, "config", None):
        argv += ["--config", args.config]
    if args.port:
        argv += ["--port", str(args.port)]
    if args.rtp_port:
        argv += ["--rtp-port", str(args.rtp_port)]
    return main(argv)


def cmd_serve(args) -> int:
    from .supervisor import main

    return main(getattr(args, "config", None))


def register(sub) -> None:
    call = sub.add_parser("call", help="call a SIP URI as a scripted caller (test tool)")
    call.add_argument("uri", metavar="SIP_URI", help="e.g. sip:callbot@127.0.0.1:5070")
    call.add_argument("--wav", dest="turn_wav", action=_TurnAction, metavar="FILE",
                      help="say this WAV once the bot is quiet (repeatable, in order)")
    call.add_argument("--dtmf", dest="turn_dtmf", action=_TurnAction, metavar="KEYS",
                      help="press these keys once the bot is quiet (repeatable, in order)")
    call.add_argument("--record", metavar="WAV", help="record what the caller hears (8 kHz)")
    call.add_argument("--timeout", type=float, default=60.0, metavar="S",
                      help="hang up after S seconds in all (default 60)")
    call.add_argument("--silence-ms", type=int, default=1000, metavar="MS",
                      help="bot silence that starts the next turn (default 1000)")
    call.add_argument("--bind", default="127.0.0.1", help="local address (default 127.0.0.1)")
    call.add_argument("--refuse-transfer", action="store_true",
                      help="answer the bot's REFER with 603 (tests its fallback)")
    call.add_argument("--dtmf-method", choices=["rfc2833", "info"], default="rfc2833")
    call.add_argument("--hangup-after", type=float, default=0.0, metavar="S",
                      help="hang up S seconds after the last turn (default: wait for the bot)")
    call.add_argument("--transfer-hold", type=float, default=2.0, metavar="S",
                      help="stay S seconds on a call the bot transferred us to (default 2)")
    call.add_argument("--log-level", type=int, default=0, help="pjsip log level on stderr")
    call.add_argument("--codecs", default="PCMA,PCMU,G722", metavar="LIST",
                      help="codecs offered, best first (default PCMA,PCMU,G722)")
    call.set_defaults(func=cmd_call, turns=None)

    worker = sub.add_parser("worker", help="run one SIP worker process")
    worker.add_argument("--port", type=int, help="SIP port (default: sip.port)")
    worker.add_argument("--rtp-port", type=int, help="first RTP port (default: sip.rtp_port_start)")
    worker.set_defaults(func=cmd_worker)

    serve = sub.add_parser("serve", help="run workers.count SIP workers and keep them alive")
    serve.set_defaults(func=cmd_serve)


