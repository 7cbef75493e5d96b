"""An Ollama Modelfile for an exported GGUF: FROM the file, the chat template in Ollama's Go
template syntax, stop tokens and a few parameters.

    text, notes = modelfile("model.gguf", chat_template, eos_token="<|im_end|>", context_length=8192)

Ollama does not run Jinja, so the template is translated for the families recognised here:
ChatML (`<|im_start|>role ... <|im_end|>`: Qwen, SmolLM, the built-in models) and Llama 3
(`<|start_header_id|>role<|end_header_id|> ... <|eot_id|>`). A ChatML template's built-in default
system prompt (SmolLM2's "You are a helpful AI assistant named SmolLM...") becomes SYSTEM. Any
other template gets a generic `role: content` TEMPLATE, said in a comment at the top of the file
and in the notes returned.
"""

from __future__ import annotations

import re

CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
          "<|im_start|>assistant\n")
LLAMA3 = ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
          "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
GENERIC = "{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}assistant: "


def template_family(chat_template: str | None) -> str:
    """chatml | llama3 | generic."""
    text = chat_template or ""
    if "<|im_start|>" in text and "<|im_end|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text and "<|eot_id|>" in text:
        return "llama3"
    return "generic"


def default_system(chat_template: str | None) -> str | None:
    """The system prompt a ChatML template writes when the conversation has none, if it has one."""
    match = re.search(r"<\|im_start\|>system\\?n?\n?(.+?)<\|im_end\|>", chat_template or "", re.S)
    if match is None or "{" in match.group(1) or "message" in match.group(1):
        return None
    return match.group(1).replace("\\n", "\n").strip() or None


def modelfile(gguf_name: str, chat_template: str | None, *, eos_token: str | None, context_length: int,
              temperature: float | None = None, top_p: float | None = None) -> tuple[str, list[str]]:
    """(Modelfile text, notes) for the GGUF file `gguf_name` beside it."""
    family = template_family(chat_template)
    notes: list[str] = []
    lines = [f"# Made by `tuneloop export --format ollama`. Create the model with: ollama create NAME -f Modelfile"]
    if family == "generic":
        note = ("the model's chat template is not one tuneloop translates (ChatML, Llama 3): TEMPLATE is a "
                "generic `role: content` one; edit it to match the template in tokenizer_config.json")
        notes.append(note)
        lines.append(f"# WARNING: {note}")
    template = {"chatml": CHATML, "llama3": LLAMA3, "generic": GENERIC}[family]
    stops = {"chatml": ["<|im_start|>", "<|im_end|>"],
             "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "generic": []}[family]
    if eos_token and eos_token not in stops:
        stops.append(eos_token)
    lines += [f"FROM ./{gguf_name}", "", f'TEMPLATE """{template}"""', ""]
    system = default_system(chat_template) if family == "chatml" else None
    if system:
        lines += [f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER num_ctx {min(int(context_length), 4096)}")
    lines.append(f"PARAMETER temperature {temperature if temperature is not None else 0.7:g}")
    lines.append(f"PARAMETER top_p {top_p if top_p is not None else 0.9:g}")
    return "\n".join(lines) + "\n", notes


def readme(name: str, gguf_name: str) -> str:
    return (f"# {name}\n\nExported by tuneloop. Load it into Ollama and chat with it:\n\n"
            f"    ollama create {name} -f Modelfile\n    ollama run {name}\n\n"
            f"llama.cpp runs the GGUF directly: `llama-cli -m {gguf_name} -cnv`\n")
