"""Record formats: recognise the shape people's rows come in and turn each row into the
technique's canonical row. Pure functions on dicts; no I/O (`stage.py` reads and writes).

| technique | record formats accepted | canonical row |
|---|---|---|
| sft | prompt/completion, input/output (SageMaker), OpenAI `messages`, Alpaca instruction/input/output (+ system), ShareGPT `conversations` (or `messages`) of from/value turns | {prompt, completion} or {messages} |
| dpo | prompt/chosen/rejected (strings or chat format), Alpaca-style instruction/input/chosen/rejected, OpenAI preference | {prompt, chosen, rejected} |
| rlvr, rlaif | prompt message array + reward_model + extra columns, OpenAI reinforcement `messages` + extra keys | {prompt, reward_model, ...extra} |

Alpaca's prompt is the instruction, then a blank line ("\n\n") and the input when the input is
not empty (`alpaca_prompt`); with a `system` column in the first row an SFT file is staged as
conversations (system, user, assistant) so the system prompt is kept. ShareGPT speakers map to
roles by `SHAREGPT_ROLES` (human -> user, gpt -> assistant, system -> system, ...); any other
speaker is a problem on that row.

The format is decided on the first record (after --column-map); every later row must have the
same shape, so a staged file is uniform. Chat-format values in string columns are flattened with
the seed's four strategies and each converted column is reported once. `FORMAT_READS` says which
source columns a format reads: staging refuses a text column that no format reads (`stage.py`,
`validate.holds_text`) unless --column-map drops it explicitly.

    conv = make_converter("dpo", detect_format(first_row, "dpo"))
    canonical = conv(row)        # raises RecordProblem (one row is bad) or ChatFormatHalt (--no-transform)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from tuneloop.data.schema import SCHEMAS
from tuneloop.data.transforms import describe_shape, detect_chat_shape, flatten_shape
from tuneloop.data.validate import RecordProblem, _type_name

PROMPT_COMPLETION = "prompt_completion"
INPUT_OUTPUT = "input_output"
MESSAGES = "messages"
PREFERENCE = "preference"
OPENAI_PREFERENCE = "openai_preference"
RL_PROMPT = "prompt_reward"
OPENAI_RFT = "openai_reinforcement"
ALPACA = "alpaca"
ALPACA_CHAT = "alpaca_system"
SHAREGPT = "sharegpt"
SHAREGPT_MESSAGES = "sharegpt_messages"
ALPACA_PREFERENCE = "alpaca_preference"

# format -> the source columns it needs (after --column-map)
FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    PROMPT_COMPLETION: ("prompt", "completion"),
    INPUT_OUTPUT: ("input", "output"),
    MESSAGES: ("messages",),
    PREFERENCE: ("prompt", "chosen", "rejected"),
    OPENAI_PREFERENCE: ("input", "preferred_output", "non_preferred_output"),
    RL_PROMPT: ("prompt", "reward_model"),
    OPENAI_RFT: ("messages", "reward_model"),
    ALPACA: ("instruction", "output"),
    ALPACA_CHAT: ("instruction", "output"),
    SHAREGPT: ("conversations",),
    SHAREGPT_MESSAGES: ("messages",),
    ALPACA_PREFERENCE: ("instruction", "chosen", "rejected"),
}

# format -> every source column it reads (the required ones and the optional ones); None: it keeps
# all columns (RL rows: reward functions read the others)
FORMAT_READS: dict[str, frozenset[str] | None] = {
    PROMPT_COMPLETION: frozenset(("prompt", "completion")),
    INPUT_OUTPUT: frozenset(("input", "output")),
    MESSAGES: frozenset(("messages",)),
    PREFERENCE: frozenset(("prompt", "chosen", "rejected")),
    OPENAI_PREFERENCE: frozenset(("input", "preferred_output", "non_preferred_output")),
    RL_PROMPT: None,
    OPENAI_RFT: None,
    ALPACA: frozenset(("instruction", "input", "output")),
    ALPACA_CHAT: frozenset(("instruction", "input", "output", "system")),
    SHAREGPT: frozenset(("conversations", "system")),
    SHAREGPT_MESSAGES: frozenset(("messages", "system")),
    ALPACA_PREFERENCE: frozenset(("instruction", "input", "chosen", "rejected")),
}

# an example row of the formats whose rows look unlike the technique's canonical example
FORMAT_EXAMPLES = {
    ALPACA: '{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}',
    ALPACA_CHAT: '{"system": "Be brief.", "instruction": "Translate to French.", "input": "Good morning", '
                 '"output": "Bonjour"}',
    SHAREGPT: '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}',
    SHAREGPT_MESSAGES: '{"messages": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}',
    MESSAGES: '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}',
    ALPACA_PREFERENCE: '{"instruction": "Greet a customer.", "chosen": "Welcome!", "rejected": "What?"}',
}

# formats whose staged rows are {messages} conversations
STAGES_MESSAGES = frozenset((MESSAGES, ALPACA_CHAT, SHAREGPT, SHAREGPT_MESSAGES))

# ShareGPT `from` values -> roles; anything else is refused on its row
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
                  "system": "system"}

FORMAT_NAMES = {
    PROMPT_COMPLETION: "prompt/completion",
    INPUT_OUTPUT: "input/output",
    MESSAGES: "OpenAI chat messages",
    PREFERENCE: "prompt/chosen/rejected",
    OPENAI_PREFERENCE: "OpenAI preference (input/preferred_output/non_preferred_output)",
    RL_PROMPT: "prompt messages + reward_model",
    OPENAI_RFT: "OpenAI reinforcement (messages + grader columns)",
    ALPACA: "Alpaca (instruction/input/output)",
    ALPACA_CHAT: "Alpaca with a system prompt (system/instruction/input/output)",
    SHAREGPT: "ShareGPT conversations (from/value turns)",
    SHAREGPT_MESSAGES: "ShareGPT messages (from/value turns)",
    ALPACA_PREFERENCE: "Alpaca-style preference (instruction/input/chosen/rejected)",
}

ACCEPTED = {
    "sft": (PROMPT_COMPLETION, INPUT_OUTPUT, MESSAGES, ALPACA, SHAREGPT),
    "dpo": (PREFERENCE, OPENAI_PREFERENCE, ALPACA_PREFERENCE),
    "rlvr": (RL_PROMPT, OPENAI_RFT),
    "rlaif": (RL_PROMPT, OPENAI_RFT),
}


class ChatFormatHalt(Exception):
    """A string column holds chat-format data and --no-transform is active."""

    def __init__(self, column: str, strategy: str):
        super().__init__(column, strategy)
        self.column, self.strategy = column, strategy


def detect_format(record: dict[str, Any], technique: str, *, reward_model: str | None = None) -> str | None:
    """The record format of a first row, or None when none of the technique's formats fits."""
    keys = record.keys()
    if technique == "sft":
        if "prompt" in keys or "completion" in keys:
            return PROMPT_COMPLETION
        if "instruction" in keys and "output" in keys:
            return ALPACA_CHAT if "system" in keys else ALPACA
        if "input" in keys and "output" in keys:
            return INPUT_OUTPUT
        if "conversations" in keys:
            return SHAREGPT
        if "messages" in keys:
            first = record["messages"][0] if type(record["messages"]) is list and record["messages"] else None
            if type(first) is dict and "role" not in first and ("from" in first or "value" in first):
                return SHAREGPT_MESSAGES
            return MESSAGES
        return None
    if technique == "dpo":
        if "instruction" in keys and "prompt" not in keys and ("chosen" in keys or "rejected" in keys):
            return ALPACA_PREFERENCE
        if "prompt" in keys or "chosen" in keys or "rejected" in keys:
            return PREFERENCE
        if "preferred_output" in keys or "non_preferred_output" in keys:
            return OPENAI_PREFERENCE
        return None
    if "prompt" in keys:
        return RL_PROMPT
    if "messages" in keys:
        return OPENAI_RFT
    return None


def missing_for_format(record: dict[str, Any], fmt: str, *, reward_model: str | None = None) -> list[str]:
    need = FORMAT_COLUMNS[fmt]
    return [c for c in need if c not in record and not (c == "reward_model" and reward_model)]


def canonical_columns(technique: str, fmt: str) -> list[str]:
    return ["messages"] if fmt in STAGES_MESSAGES else list(SCHEMAS[technique])


def alpaca_prompt(instruction: str, input_text: str | None) -> str:
    """Alpaca's prompt: the instruction, then a blank line and the input when it is not empty."""
    return instruction + "\n\n" + input_text if input_text and not input_text.isspace() else instruction


def format_note(fmt: str) -> str | None:
    """What is reported once when the whole file is converted from another record format."""
    return {
        INPUT_OUTPUT: "ℹ️  Mapped SageMaker input/output columns to prompt/completion",
        MESSAGES: "ℹ️  Detected OpenAI chat format ('messages'): staged as conversations (system prompts kept); "
                  "training puts the loss on assistant turns only",
        OPENAI_PREFERENCE: "ℹ️  Converted OpenAI preference format (input.messages, preferred_output, "
                           "non_preferred_output) to prompt/chosen/rejected",
        OPENAI_RFT: "ℹ️  Converted OpenAI reinforcement format: 'messages' became the prompt; the other columns "
                    "are kept for the reward function",
        ALPACA: "ℹ️  Detected Alpaca format (instruction/input/output): prompt = instruction, then a blank line "
                "and the input when it is not empty; completion = output",
        ALPACA_CHAT: "ℹ️  Detected Alpaca format with a system column: staged as conversations (system; user = "
                     "instruction, then a blank line and the input when it is not empty; assistant = output)",
        SHAREGPT: "ℹ️  Detected ShareGPT format ('conversations' of from/value turns): staged as conversations "
                  "(human -> user, gpt -> assistant, system kept); training puts the loss on assistant turns only",
        SHAREGPT_MESSAGES: "ℹ️  Detected ShareGPT format ('messages' of from/value turns): staged as conversations "
                           "(human -> user, gpt -> assistant, system kept); training puts the loss on assistant "
                           "turns only",
        ALPACA_PREFERENCE: "ℹ️  Detected Alpaca-style preference rows: prompt = instruction, then a blank line and "
                           "the input when it is not empty",
    }.get(fmt)


def _content(value: Any, where: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)  # OpenAI content parts
    raise RecordProblem(f"{where}: content must be a string, got {_type_name(value)}")


def _objects(value: Any, column: str, noun: str, keys: tuple[str, str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The items of a conversation column, numbered from 1, as they are checked: a non-empty array of
    objects (`noun`s with the two `keys`), else the problem naming the column and the item."""
    if type(value) is not list or not value:
        raise RecordProblem(f"column '{column}' must be a non-empty array of {{\"{keys[0]}\", \"{keys[1]}\"}} "
                            f"{noun}s, got {'an empty array' if value == [] else _type_name(value)}", column)
    for i, item in enumerate(value, start=1):
        if type(item) is not dict:
            raise RecordProblem(f"column '{column}' {noun} {i}: expected an object with {keys[0]} and {keys[1]}, "
                                f"got {_type_name(item)}", column)
        yield i, item


def check_messages(value: Any, column: str) -> list[dict[str, str]]:
    """A non-empty array of {"role", "content"} messages, normalised to exactly those two keys."""
    out = []
    for i, m in _objects(value, column, "message", ("role", "content")):
        role = m.get("role")
        if type(role) is not str or not role:
            raise RecordProblem(f"column '{column}' message {i}: 'role' must be a non-empty string "
                                f"(system, user or assistant), got {_type_name(role)}", column)
        out.append({"role": role, "content": _content(m.get("content"), f"column '{column}' message {i} ({role})")})
    return out


def sharegpt_turns(value: Any, column: str, system: Any = None) -> list[dict[str, str]]:
    """A ShareGPT conversation ({"from", "value"} turns; {"role", "content"} ones are taken too) as
    {role, content} messages; a top-level `system` string becomes the first message."""
    out = []
    for i, turn in _objects(value, column, "turn", ("from", "value")):
        speaker = turn.get("from", turn.get("role"))
        role = SHAREGPT_ROLES.get(speaker.strip().lower()) if type(speaker) is str else None
        if role is None:
            raise RecordProblem(
                f"column '{column}' turn {i}: unknown speaker 'from': {speaker!r:.40}; ShareGPT speakers are "
                "human or user, gpt, assistant or model, and system. Relabel that turn or remove it "
                "(tool turns such as function_call or observation cannot be staged as chat)", column)
        content = turn.get("value", turn.get("content"))
        out.append({"role": role, "content": _content(content, f"column '{column}' turn {i} ({speaker})")})
    if system is not None:
        if type(system) is not str:
            raise RecordProblem(f"column 'system' must be a string, got {_type_name(system)}", "system")
        if system and not system.isspace() and out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": system})
    if not any(m["role"] == "assistant" for m in out):
        raise RecordProblem(f"column '{column}' has no gpt/assistant turn: nothing to learn from", column)
    return out


def make_converter(technique: str, fmt: str, *, no_transform: bool = False, reward_model: str | None = None,
                   notes: dict[str, str] | None = None,
                   reward_check: Callable[[str], str | None] | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function from a source row of format `fmt` to the canonical row. Flattened columns are
    recorded once in `notes` ({column: seed-worded message}). `reward_check` says why a row's own
    `reward_model` is refused (None: allowed); data never chooses code or URLs unchecked."""
    notes = {} if notes is None else notes

    def text(value: Any, col: str) -> str:
        """A non-string value of a string column: flatten chat format, else a problem."""
        try:
            shape = flatten_shape(value)
        except ValueError as e:
            if no_transform:
                raise ChatFormatHalt(col, detect_chat_shape(value)[0]) from None
            raise RecordProblem(f"column '{col}': {e}", col) from None
        if shape is None:
            raise RecordProblem(f"column '{col}' must be a string, got {_type_name(value)}", col)
        if no_transform:
            raise ChatFormatHalt(col, shape[0])
        if col not in notes:
            notes[col] = (f"ℹ️  Auto-converted column '{col}' from chat-format to string\n"
                          f"   Format: {describe_shape(shape[0], shape[1])}")
        return shape[2]

    def string(record: dict[str, Any], col: str, src: str | None = None) -> str:
        value = record[src or col]
        return value if type(value) is str else text(value, col)

    def missing(record: dict[str, Any], e: KeyError) -> RecordProblem:
        col = e.args[0]
        other = detect_format(record, technique)
        if other is not None and other != fmt:
            return RecordProblem(
                f"row is in the {FORMAT_NAMES[other]} format but the first row is {FORMAT_NAMES[fmt]}; "
                "a staged file uses one format for every row", col)
        return RecordProblem(f"missing column '{col}'", col)

    if fmt in (PROMPT_COMPLETION, INPUT_OUTPUT):
        p_src, c_src = ("input", "output") if fmt == INPUT_OUTPUT else ("prompt", "completion")

        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                p, c = record[p_src], record[c_src]
            except KeyError as e:
                raise missing(record, e) from None
            return {"prompt": p if type(p) is str else text(p, "prompt"),
                    "completion": c if type(c) is str else text(c, "completion")}

    elif fmt in (ALPACA, ALPACA_CHAT, ALPACA_PREFERENCE):
        answers = ("chosen", "rejected") if fmt == ALPACA_PREFERENCE else ("output",)

        def prompt_of(record: dict[str, Any]) -> str:
            instruction = string(record, "instruction")
            extra = record.get("input")
            return alpaca_prompt(instruction, None if extra is None else string(record, "input"))

        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                prompt = prompt_of(record)
                values = [string(record, c) for c in answers]
            except KeyError as e:
                raise missing(record, e) from None
            if fmt == ALPACA_PREFERENCE:
                return {"prompt": prompt, "chosen": values[0], "rejected": values[1]}
            if fmt == ALPACA:
                return {"prompt": prompt, "completion": values[0]}
            system = record.get("system")
            system = None if system is None else string(record, "system")
            head = [{"role": "system", "content": system}] if system and not system.isspace() else []
            return {"messages": head + [{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": values[0]}]}

    elif fmt in (SHAREGPT, SHAREGPT_MESSAGES):
        source = "conversations" if fmt == SHAREGPT else "messages"

        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                return {"messages": sharegpt_turns(record[source], source, record.get("system"))}
            except KeyError as e:
                raise missing(record, e) from None

    elif fmt == MESSAGES:
        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                messages = check_messages(record["messages"], "messages")
            except KeyError as e:
                raise missing(record, e) from None
            if not any(m["role"] == "assistant" for m in messages):
                raise RecordProblem("column 'messages' has no assistant message: nothing to learn from", "messages")
            return {"messages": messages}

    elif fmt == PREFERENCE:
        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                p, c, r = record["prompt"], record["chosen"], record["rejected"]
            except KeyError as e:
                raise missing(record, e) from None
            return {"prompt": p if type(p) is str else text(p, "prompt"),
                    "chosen": c if type(c) is str else text(c, "chosen"),
                    "rejected": r if type(r) is str else text(r, "rejected")}

    elif fmt == OPENAI_PREFERENCE:
        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                source = record["input"]
                if type(source) is dict and "messages" in source:
                    source = source["messages"]
                return {"prompt": string({"prompt": source}, "prompt"),
                        "chosen": string(record, "chosen", "preferred_output"),
                        "rejected": string(record, "rejected", "non_preferred_output")}
            except KeyError as e:
                raise missing(record, e) from None

    else:  # RL_PROMPT, OPENAI_RFT
        prompt_src = "messages" if fmt == OPENAI_RFT else "prompt"

        def convert(record: dict[str, Any]) -> dict[str, Any]:
            try:
                prompt = check_messages(record[prompt_src], "prompt" if fmt == RL_PROMPT else "messages")
            except KeyError as e:
                raise missing(record, e) from None
            reward = record.get("reward_model", reward_model)
            if reward is None:
                raise RecordProblem("missing column 'reward_model'", "reward_model")
            if type(reward) is not str:
                raise RecordProblem(f"column 'reward_model' must be a string, got {_type_name(reward)}",
                                    "reward_model")
            if reward_check is not None and "reward_model" in record:
                why = reward_check(reward)
                if why:
                    raise RecordProblem(why, "reward_model")
            out = {"prompt": prompt, "reward_model": reward}
            out.update((k, v) for k, v in record.items() if k not in out and k != prompt_src)
            return out

    return convert
