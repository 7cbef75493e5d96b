"""Export a model or adapter for other runtimes: `tuneloop export REF --format merged|gguf|ollama
--output DIR` (cli/export.py; the store's part is service/exports.py).

    ref = resolve("sft", use="eval", lookups=lookups)       # tuneloop.models.resolve: the one resolver
    result = export_model(ref, "gguf", Path("out"), quant="q8_0")
    result.files, result.verify.summary()

  merged  a standalone safetensors folder: the adapter merged into its base (merge_and_unload), or
          the full model as it is, with tokenizer, chat template and generation_config (merged.py)
  gguf    one GGUF file (f16, q8_0 or f32) for llama.cpp, llama, qwen2 and qwen3 (gguf_writer.py)
  ollama  the GGUF, a Modelfile (ollama.py) and a README saying `ollama create NAME -f Modelfile`

Every export is checked (verify.py) unless `verify=False`: a merged folder or GGUF is loaded back
with plain transformers and answers a few prompts greedily like the model it came from; a failed
check raises ValidationError with the numbers (the files stay, for a look).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.errors import ValidationError

FORMATS = ("merged", "gguf", "ollama")


@dataclass
class ExportResult:
    format: str
    output: str
    files: list[str]
    source: str
    quant: str | None = None
    gguf: dict[str, Any] | None = None
    verify: Any = None          # verify.VerifyReport, or None with verify=False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["verify"] = self.verify.to_dict() if self.verify is not None else None
        return d


def one_of(value: str, choices: tuple[str, ...], what: str, param: str) -> str:
    """`value` when it is one of `choices`, else the ValidationError naming them: the one check of an
    export option (the format here, the quantization in gguf_writer.check_quant)."""
    if value not in choices:
        raise ValidationError(f"Unknown {what} {value!r}.", hint=f"Use one of: {', '.join(choices)}.", param=param)
    return value


def check_format(fmt: str) -> str:
    return one_of(fmt, FORMATS, "export format", "format")


def file_stem(name: str) -> str:
    """A file name from a reference: its last path part, safe characters only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(name).rstrip("/")).name).strip("-.")
    return stem or "model"


def export_model(ref: Any, fmt: str, output: Path, *, quant: str | None = None, verify: bool = True,
                 name: str | None = None) -> ExportResult:
    """Export the resolved `ref` (a ModelRef) as `fmt` under `output`."""
    from tuneloop.export import gguf_writer

    check_format(fmt)
    if fmt != "merged":
        quant = gguf_writer.check_quant(quant or gguf_writer.DEFAULT_QUANT)
    elif quant is not None:
        raise ValidationError("--quant applies to gguf and ollama exports; a merged folder keeps the weights' dtype.",
                              param="quant")
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise ValidationError(f"--output {output} is a file; pass a folder.", param="output")
    from tuneloop.export.merged import load_merged, write_merged

    model, tokenizer = load_merged(ref)   # gguf_writer.write_gguf checks the architecture before writing a file
    stem = file_stem(name or ref.name)
    if fmt == "merged":
        write_merged(model, tokenizer, output, source=ref)
        result = ExportResult(fmt, str(output), sorted(p.name for p in output.iterdir()), ref.name)
        if verify:
            from tuneloop.export.verify import verify_merged

            result.verify = verify_merged(model, tokenizer, output)
        return _checked(result)
    path = output / f"{stem}.{quant}.gguf"
    info = gguf_writer.write_gguf(model, tokenizer, path, quant=quant, name=stem)
    result = ExportResult(fmt, str(output), [path.name], ref.name, quant, info.to_dict(), notes=list(info.notes))
    if fmt == "ollama":
        from tuneloop.export import ollama

        gen = getattr(model, "generation_config", None)
        text, notes = ollama.modelfile(path.name, tokenizer.chat_template, eos_token=tokenizer.eos_token,
                                       context_length=model.config.max_position_embeddings,
                                       temperature=getattr(gen, "temperature", None) if getattr(gen, "do_sample", False) else None,
                                       top_p=getattr(gen, "top_p", None) if getattr(gen, "do_sample", False) else None)
        (output / "Modelfile").write_text(text)
        (output / "README.md").write_text(ollama.readme(stem.lower(), path.name))
        result.files += ["Modelfile", "README.md"]
        result.notes += notes
    if verify:
        from tuneloop.export.verify import verify_gguf

        result.verify = verify_gguf(model, tokenizer, path, quant=quant)
    return _checked(result)


def _checked(result: ExportResult) -> ExportResult:
    if result.verify is not None and not result.verify.passed:
        raise ValidationError(f"The exported model does not answer like the source: {result.verify.summary()}.",
                              hint=f"The files are in {result.output} for a look; a higher precision "
                                   "(--quant f16) keeps closer to the source.", param="format")
    return result
