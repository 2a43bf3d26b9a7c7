"""`callbot console` (serve the supervisor console) and `callbot console hash-password`.

Registered through the "callbot.commands" entry point.
"""

from __future__ import annotations

import getpass
import sys

from ..errors import CallbotError


def cmd_serve(args) -> int:
    from ..config import load_config
    from .app import serve

    serve(load_config(getattr(args, "config", None)), args.host, args.port)
    return 0


def read_password(stream=None) -> str:
    """Twice at a terminal (no echo); one line when piped (scripts, tests)."""
    stream = stream or sys.stdin
    if stream.isatty():
        first = getpass.getpass("New console password: ")
        if getpass.getpass("Again: ") != first:
            raise CallbotError("the two passwords differ")
        return first
    return stream.readline().rstrip("\r\n")


def cmd_hash_password(args) -> int:
    from .passwords import MIN_LENGTH, hash_password

    password = read_password()
    if len(password) < MIN_LENGTH:
        raise CallbotError(f"a console password needs at least {MIN_LENGTH} characters")
    hashed = hash_password(password)
    print(hashed)
    print(f'# in the configuration:\n# [[console.users]]\n# name = "..."\n'
          f'# role = "editor"   # or "readonly"\n# password_hash = "{hashed}"', file=sys.stderr)
    return 0


def register(sub) -> None:
    """Add `console` to the `callbot` command line."""
    c = sub.add_parser("console", help="the supervisors' web console (dashboard, calls, "
                                       "review queue, retraining)")
    c.add_argument("--host", help="address to listen on (default: [console] host)")
    c.add_argument("--port", type=int, help="port (default: [console] port)")
    c.set_defaults(func=cmd_serve)
    csub = c.add_subparsers(dest="console_command", metavar="ACTION")
    hp = csub.add_parser("hash-password", help="read a password (stdin or prompt), print its "
                                               "scrypt hash for [[console.users]]")
    hp.set_defaults(func=cmd_hash_password)
