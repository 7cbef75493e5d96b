"""tuneloop ui [--host 127.0.0.1] [--port 8600]: the guided web UI, an edge like cli/ and sdk/.

    from tuneloop.service.app import open_services
    from tuneloop.ui import create_ui
    app = create_ui(open_services())          # a FastAPI app; mountable: server.mount("/ui", app)

Every page is rendered on the server (Jinja2, `templates/`) at a stable URL: `/`, `/datasets`,
`/jobs`, `/jobs/new`, `/jobs/JOB_ID`, `/registry`, `/playground`. The few assets (`static/app.css`,
`static/curves.js`) ship in the package: nothing comes from a CDN. Pages call the services, never
the store's opening (`open_services` hands them in), the way the CLI does.
"""

from tuneloop.ui.app import create_ui

__all__ = ["create_ui"]
