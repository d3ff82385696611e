"""The worker daemon (`jobrunner run`): a supervisor and one small service per module.

Nothing is re-exported here, so that importing one module (a job process imports
`jobrunner.worker.isolation`) does not load the supervisor.
"""
