"""Shared fixtures: the real configuration, knowledge base and trained classifier.

The tests run after `make test`'s set-up (models installed with the test stand-ins, classifier
trained, answers rendered); a missing piece fails with the command that provides it.
"""

from __future__ import annotations

import pytest

from callbot.config import load_config
from callbot.intents import load_classifier
from callbot.kb import load_kb


@pytest.fixture(scope="session")
def config():
    return load_config(env={})


@pytest.fixture(scope="session")
def kb(config):
    return load_kb(config.paths.kb)


@pytest.fixture(scope="session")
def classifier(config):
    return load_classifier(config)
