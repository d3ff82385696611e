"""jobrunner: a distributed cron and job-runner daemon."""

__version__ = "0.1.0"
