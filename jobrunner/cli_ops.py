"""Operations commands: health (registered on `app`)."""

from __future__ import annotations

from jobrunner.cli import app  # noqa: F401 - commands register themselves on the shared app
