"""callbot: an offline French voice bot for the SIRENE register help line.

The core (this package) turns a caller's 16-bit PCM frames into the bot's spoken answers
and its decisions (answer, ask again, transfer, hang up). It knows nothing of SIP.
"""

__version__ = "0.1.0"
