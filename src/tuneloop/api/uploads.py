"""A multipart upload read as it arrives: the `file` part goes straight into the service's `Upload`
(on disk, bounded, hashed), the small form fields (`purpose`) are kept; nothing is held in memory
beyond one chunk, so a 2 GB upload costs the server a few kilobytes and stops at the limit.

    fields, upload = await read_multipart(request, services.finetuning.files.receive(project))
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from tuneloop.errors import ValidationError

MAX_FIELD_BYTES = 4096        # a form field other than the file (purpose) is small
MAX_FIELDS = 8


async def read_multipart(request: Request, upload: Any) -> tuple[dict[str, str], str | None]:
    """Stream the body: returns the form fields and the uploaded file's name (None: no `file` part).
    On any error the partial upload is discarded."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        upload.discard()
        raise ValidationError("Upload the file as multipart/form-data with a `file` part and `purpose`.",
                              param="file", hint='client.files.create(file=open("train.jsonl", "rb"), '
                                                 'purpose="fine-tune")')
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None,
                             "buf": bytearray(), "fields": {}, "error": None, "file_name": None}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        state["filename"] = filename.decode("utf-8", "replace") if filename is not None else None
        if state["name"] == "file":
            state["file_name"] = state["filename"] or "upload.jsonl"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["error"] is not None:
            return
        if state["name"] == "file":
            try:
                upload.write(data[start:end])
            except Exception as e:  # noqa: BLE001 - over the limit: kept and raised after the parse
                state["error"] = e
        else:
            state["buf"] += data[start:end]
            if len(state["buf"]) > MAX_FIELD_BYTES:
                state["error"] = ValidationError(f"Form field {state['name']!r} is too long.", param=state["name"])

    def on_part_end() -> None:
        if state["name"] != "file" and state["error"] is None:
            if len(state["fields"]) >= MAX_FIELDS:
                state["error"] = ValidationError("Too many form fields.", param="body")
            state["fields"][state["name"]] = bytes(state["buf"]).decode("utf-8", "replace")
        state["buf"] = bytearray()
        state["headers"] = {}

    parser = MultipartParser(boundary, {"on_header_field": on_header_field, "on_header_value": on_header_value,
                                        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if state["error"] is not None:
                raise state["error"]
        parser.finalize()
    except ValidationError:
        upload.discard()
        raise
    except Exception as e:  # noqa: BLE001 - a malformed body
        upload.discard()
        if getattr(e, "http_status", None):
            raise
        raise ValidationError(f"The multipart body could not be read: {e}.", param="file") from None
    upload.close()
    return state["fields"], state["file_name"]
