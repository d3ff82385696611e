"""How a user tests their own jobs with jobrunner's helpers (docs/testing.md): inline with
`run_job`, and on a real worker with the `jobrunner_worker` fixture of the pytest plugin."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner import InvalidArguments
from jobrunner.testing import JobrunnerWorker, run_job


def test_cleanup_runs_inline_with_a_real_context(jobrunner_config: Path) -> None:
    # the job's own kwargs (older_than_days = 7 in the TOML), ours merged over them
    assert run_job(jobrunner_config, "cleanup") == {"older_than_days": 7}
    assert run_job(jobrunner_config, "cleanup", older_than_days=3) == {"older_than_days": 3}


def test_inline_kwargs_are_checked_like_an_enqueue(jobrunner_config: Path) -> None:
    with pytest.raises(InvalidArguments, match="'older_than_days' must be integer"):
        run_job(jobrunner_config, "cleanup", older_than_days="three")


def test_a_welcome_email_on_a_real_worker(jobrunner_worker: JobrunnerWorker) -> None:
    run = jobrunner_worker.enqueue("send-welcome-email", {"user_id": 7})
    done = jobrunner_worker.wait_for(run.id)
    assert (done.status, done.result) == ("succeeded", {"sent_to": 7})
    with pytest.raises(InvalidArguments, match="needs the parameter 'user_id'"):
        jobrunner_worker.enqueue("send-welcome-email", {})
