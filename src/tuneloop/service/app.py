"""The one place the store is opened for an edge: the CLI, the SDK (and the coming API and UI)
ask `open_services()` and call the services on it; nothing below service/ opens the store
(tests/unit/test_layering.py), lookups are passed down instead.

    services = open_services()                 # settings from the environment (TUNELOOP_HOME ...)
    services.jobs.prepare(request)             # JobService
    services.datasets.create("support-sft", "data/train.jsonl", "sft")
    services.evaluators.verify("colour-match", "data/train.jsonl")
    services.evaluations.submit(EvalRequest(model="sft", dataset="val.jsonl"))
    services.deployments("default").state()

Each service is built on first use, so a light command (`tune --status`) imports only what it
reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tuneloop.settings import Settings, load_settings
from tuneloop.store import Store, open_store

if TYPE_CHECKING:  # the services import the libraries they drive; load them when used
    from tuneloop.service.datasets import DatasetService
    from tuneloop.service.evaluations import EvaluationService
    from tuneloop.service.evaluators import EvaluatorService
    from tuneloop.service.jobs import JobService
    from tuneloop.service.deployments import DeploymentService
    from tuneloop.service.finetuning import FineTuningService
    from tuneloop.service.keys import KeyService
    from tuneloop.service.webhooks import WebhookService


@dataclass
class Services:
    store: Store
    settings: Settings

    @cached_property
    def jobs(self) -> "JobService":
        from tuneloop.service.jobs import JobService

        return JobService(self.store, self.settings)

    @cached_property
    def datasets(self) -> "DatasetService":
        from tuneloop.service.datasets import DatasetService

        return DatasetService(self.store, self.settings)

    @cached_property
    def evaluators(self) -> "EvaluatorService":
        from tuneloop.service.evaluators import EvaluatorService

        return EvaluatorService(self.store, self.settings)

    @cached_property
    def evaluations(self) -> "EvaluationService":
        from tuneloop.service.evaluations import EvaluationService

        return EvaluationService(self.store, self.settings, self.jobs)

    @cached_property
    def keys(self) -> "KeyService":
        """API keys per project (`tuneloop keys`), and the check the server is handed."""
        from tuneloop.service.keys import KeyService

        return KeyService(self.store, self.settings)

    @cached_property
    def webhooks(self) -> "WebhookService":
        """Webhooks per project: fine-tuning jobs' ends posted, signed (`tuneloop webhooks`)."""
        from tuneloop.service.webhooks import WebhookService

        return WebhookService(self.store)

    @cached_property
    def finetuning(self) -> "FineTuningService":
        """The OpenAI fine-tuning API's files, jobs, events, checkpoints and ft: models."""
        from tuneloop.service.finetuning import FineTuningService

        return FineTuningService(self.store, self.settings, self.jobs)

    def deployments(self, project: str, api_key: str | None = None) -> "DeploymentService":
        """A project's deployment state, `tuneloop serve`, and its server's admin calls."""
        from tuneloop.service.deployments import DeploymentService

        return DeploymentService(self.store, self.settings, project, api_key=api_key)

    def dataset_lookup(self) -> Callable[[str], Any]:
        """Registered datasets `name[@vN]`, as `stage_dataset(lookup=...)` asks for them."""
        return self.store.get_dataset_version


def open_services(settings: Settings | None = None) -> Services:
    """The store named by `settings` (default: the environment's) and the services over it."""
    settings = settings or load_settings()
    return Services(open_store(settings.database_url), settings)


def registered_dataset_lookup(settings: Settings | None = None) -> Callable[[str], Any]:
    """A dataset lookup that opens the store only when a name is looked up and a database exists,
    so staging a file never creates one (`tuneloop datasets stage`, the SDK before any job)."""

    def lookup(ref: str) -> dict[str, Any] | None:
        s = settings or load_settings()
        url = s.database_url
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
            return None  # no database yet, so no registered datasets (and none is created here)
        return open_store(url).get_dataset_version(ref)

    return lookup
