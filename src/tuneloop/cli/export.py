"""tuneloop export REF --format merged|gguf|ollama --output DIR [--quant f16|q8_0|f32] [--no-verify]
[--json]: a model or adapter as a standalone safetensors folder, a GGUF file for llama.cpp, or a GGUF
with an Ollama Modelfile; checked by loading it back (tuneloop.export, service/exports.py)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from tuneloop.cli.common import handle_errors, print_json


@handle_errors
def export(ref: str = typer.Argument(..., help="A job (name, or a technique for its latest output), GROUP@vN, a "
                                     "deployed name, an adapter or model folder, or a catalog / built-in model."),
           fmt: str = typer.Option(..., "--format", help="merged (safetensors folder, adapter merged) | gguf "
                                   "(llama.cpp) | ollama (GGUF + Modelfile)."),
           output: str = typer.Option(..., "--output", help="Folder to write (merged: must be new or empty)."),
           quant: Optional[str] = typer.Option(None, "--quant", help="GGUF weights: f16 | q8_0 | f32 "
                                               "[default: q8_0]."),
           verify: bool = typer.Option(True, "--verify/--no-verify", help="Load the export back with transformers "
                                       "and compare greedy answers with the source."),
           project: Optional[str] = typer.Option(None, "--project", envvar="TUNELOOP_PROJECT"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Export a model for other runtimes: merged safetensors, GGUF (llama, qwen2, qwen3) or Ollama."""
    from pathlib import Path

    from tuneloop.cli.common import services
    from tuneloop.service.exports import export as run_export

    print(f"Exporting {ref} as {fmt}...", file=sys.stderr)
    result, artifact = run_export(services().store, ref, fmt, Path(output), quant=quant, verify=verify,
                                  project=project)
    if as_json:
        return print_json({**result.to_dict(), "artifact": artifact})
    for note in result.notes:
        print(f"⚠️  {note}", file=sys.stderr)
    print(f"✅ {fmt}{f' ({result.quant})' if result.quant else ''} export of {result.source}: {result.output}")
    for name in result.files:
        print(f"   {name}")
    if result.verify is not None:
        print(f"   verified: {result.verify.summary()}")
    if artifact is not None:
        print(f"   registered as an artifact of {artifact['group_name']}@v{artifact['version']}")
    gguf = next((n for n in result.files if n.endswith(".gguf")), None)
    if fmt == "ollama":
        print(f"Next: cd {result.output} && ollama create NAME -f Modelfile && ollama run NAME")
    elif gguf:
        print(f"Next: llama-cli -m {Path(result.output) / gguf} -cnv")
    else:
        print(f"Next: AutoModelForCausalLM.from_pretrained({result.output!r})")
