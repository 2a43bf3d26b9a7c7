"""The supervisor web console: dashboard, calls and their transcripts, the review queue that
turns what the bot did not understand into training phrasings, and retraining.

``create_app(config)`` builds the ASGI application; ``callbot console`` serves it.
"""
