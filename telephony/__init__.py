"""The SIP side of callbot: pjsua2 worker processes that carry calls to the core's CallSession.

Dependency rule: ``telephony`` imports ``callbot``; the core never imports ``telephony``.
Modules, one job each:

- :mod:`telephony.settings` validates the [sip], [transfer] and [workers] sections.
- :mod:`telephony.pjlib` starts and stops one pjsua2 Endpoint the way that is known to work.
- :mod:`telephony.media` moves 20 ms frames between the conference bridge and a call.
- :mod:`telephony.transfer` builds the context headers and the Refer-To target.
- :mod:`telephony.call` is one answered call: pjsua2 callbacks plus a worker thread.
- :mod:`telephony.worker` is the process: admission, main loop, shutdown.
- :mod:`telephony.caller` is the pjsua2 test caller behind ``callbot call``.
"""
