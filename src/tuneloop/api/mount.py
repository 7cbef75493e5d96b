"""What `tuneloop serve` adds to the inference server: the fine-tuning API's routers (files,
jobs, graders), its `ft:` models served on demand, the workers that start queued jobs, and the
thread that posts the jobs' ends to the projects' webhooks.

    ext = api_extensions(open_services(), workers=1)
    serving.server.run(..., extensions=ext)
"""

from __future__ import annotations

import sys
import threading

from tuneloop.api.files import files_router
from tuneloop.api.graders import router as graders_router
from tuneloop.api.jobs import jobs_router
from tuneloop.service.app import Services
from tuneloop.service.finetuning import FT_MODEL_PREFIX, run_workers
from tuneloop.serving.server import Extensions


class FineTunedModels:
    """The serving OnDemand over the fine-tuning service: `ft:` models and checkpoints by project."""

    prefix = FT_MODEL_PREFIX

    def __init__(self, services: Services):
        self.svc = services.finetuning

    def find(self, name: str, project: str) -> tuple[str, str] | None:
        found = self.svc.served(name, project)
        return None if found is None else (found[0], found[1])

    def names(self, project: str) -> list[str]:
        return self.svc.served_names(project)


def api_extensions(services: Services, workers: int = 1) -> Extensions:
    svc = services.finetuning
    background = []
    if workers > 0:
        def work(stop: threading.Event) -> None:
            run_workers(lambda: svc, workers, stop, log=lambda line: print(f"workers: {line}", file=sys.stderr,
                                                                            flush=True))

        background.append(work)

    def post_webhooks(stop: threading.Event) -> None:
        """Every second: the ends of jobs posted to their project's webhooks (service/webhooks.py)."""
        while not stop.wait(1.0):
            try:
                services.webhooks.tick()
            except Exception as e:  # noqa: BLE001 - a locked database, say: the next second tries again
                print(f"webhooks: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    background.append(post_webhooks)
    return Extensions(routers=[files_router(svc.files), jobs_router(svc), graders_router],
                      on_demand=FineTunedModels(services), background=background, streamed=("/v1/files",))
