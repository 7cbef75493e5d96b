"""tuneloop models [--json]: the supported model catalog."""

from __future__ import annotations

import typer
from rich.table import Table

from tuneloop.cli.common import console, handle_errors, print_json


def _size(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@handle_errors
def models(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the models tuneloop can customize, with techniques and training types."""
    from tuneloop.catalog import load_catalog
    from tuneloop.sdk import list_supported_models

    if as_json:
        return print_json(list_supported_models())
    catalog = load_catalog()
    table = Table(title=f"Supported Model Catalog (synced {catalog.last_synced})", title_justify="left")
    table.add_column("model", no_wrap=True)
    for col in ("family", "size", "techniques", "training types", "notes"):
        table.add_column(col)
    for m in catalog.models.values():
        types = sorted({t for e in m.techniques.values() for t in e.training_types})
        notes = ", ".join(n for n, on in (("default", m.default), ("built-in", m.builtin), ("gated: --accept-eula", m.gated),
                                          ("vision-language", m.modality != "text")) if on)
        table.add_row(m.id, f"{m.provider} {m.family}", _size(m.parameters), ", ".join(m.techniques),
                      ", ".join(types), notes)
    console().print(table)
    warning = catalog.staleness_warning()
    if warning:
        print(warning)
