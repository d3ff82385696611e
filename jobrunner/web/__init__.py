"""The dashboard (`pip install 'jobrunner[web]'`): see and steer jobs, slots, runs, runtime
schedules and workers in the browser. Server-rendered with Jinja2; the vendored htmx
(`static/htmx.min.js`, Zero-Clause BSD) refreshes lists and the timeline, and every page
reads without JavaScript. Mount it in a FastAPI app behind the app's own auth::

    from fastapi import Depends, FastAPI
    from jobrunner import Client
    from jobrunner.web import create_dashboard

    app = FastAPI()
    app.mount("/jobrunner", create_dashboard(Client.from_url(URL), dependencies=[Depends(admin)]))

or serve it alone with `jobrunner web -c FILE` (`[web] listen`, `[web] token`).
"""

from jobrunner.web.app import create_dashboard

__all__ = ["create_dashboard"]
