"""A user's own test set-up: point the jobrunner plugin at the configuration under test."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def jobrunner_config() -> Path:
    return ROOT / "config.example.toml"
