"""The request's project, for the fine-tuning API's routers: every object they create, list or
read belongs to it, so another project's key sees none of them (404).

    from fastapi import Depends
    from tuneloop.api.auth import Project, request_project

    @router.get("/v1/files")
    def list_files(project: Project): ...          # or: project: str = Depends(project_dependency)

The rule is serving/routes/auth.py's (the inference routes use the same): the server's
--api-key is an admin key of the server's project; a key from `tuneloop keys create` is its
project's; with no --api-key and no key ever created every request is `default`'s; else a
missing or wrong key is a 401 in OpenAI's error body. `key_check` builds the `KeyCheck` over
the database that `tuneloop serve` hands the server (`app.state.keys`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends

from tuneloop.serving.routes.auth import DEFAULT_PROJECT, KeyCheck, bearer_token, project_dependency, request_project

if TYPE_CHECKING:
    from tuneloop.service.app import Services

Project = Annotated[str, Depends(project_dependency)]

__all__ = ["DEFAULT_PROJECT", "KeyCheck", "Project", "bearer_token", "key_check", "project_dependency",
           "request_project"]


def key_check(services: "Services") -> KeyCheck:
    """The database's keys as the server checks them (service/keys.py's KeyService)."""
    return services.keys
