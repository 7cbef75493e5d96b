"""The Files API: POST /v1/files (multipart `file` + `purpose=fine-tune`, streamed to disk),
GET /v1/files, GET /v1/files/{id}, DELETE /v1/files/{id}, GET /v1/files/{id}/content; each
project sees only its own files.

    client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tuneloop.api.auth import Project
from tuneloop.api.uploads import read_multipart
from tuneloop.errors import ValidationError
from tuneloop.service.finetuning import FileService


def files_router(files: FileService) -> APIRouter:
    router = APIRouter(prefix="/v1/files")

    @router.post("")
    async def create(request: Request, project: Project) -> dict[str, Any]:
        upload = files.receive(project)
        fields, name = await read_multipart(request, upload)
        if name is None:
            upload.discard()
            raise ValidationError("Missing the `file` part.", param="file",
                                  hint='client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")')
        purpose = fields.get("purpose")
        if not purpose:
            upload.discard()
            raise ValidationError("Missing required parameter: 'purpose'.", param="purpose",
                                  hint='Pass purpose="fine-tune".')
        return await run_in_threadpool(files.create, project, upload, name, purpose)

    @router.get("")
    def list_files(project: Project, purpose: Optional[str] = None, after: Optional[str] = None,
                   limit: int = 10000, order: str = "desc") -> dict[str, Any]:
        if not 1 <= limit <= 10000:
            raise ValidationError(f"limit must be between 1 and 10000, got {limit}.", param="limit")
        return files.list(project, purpose, after, limit, order)

    @router.get("/{file_id}")
    def retrieve(file_id: str, project: Project) -> dict[str, Any]:
        from tuneloop.service.finetuning import file_object

        return file_object(files.get(project, file_id))

    @router.delete("/{file_id}")
    def delete(file_id: str, project: Project) -> dict[str, Any]:
        return files.delete(project, file_id)

    @router.get("/{file_id}/content")
    def content(file_id: str, project: Project) -> FileResponse:
        row = files.get(project, file_id)
        return FileResponse(row["path"], media_type="application/octet-stream", filename=row["filename"])

    return router
