"""Loss on the assistant turns only, whatever the chat template (tuneloop.training.tokenize).

The real model's tokenizer (SmolLM2-135M-Instruct, from its GGUF) renders through the Jinja text of
three template families written out below, ChatML, Llama 3 and Gemma, with their control tokens
added as special tokens: the trained tokens decode to exactly each assistant content, its
end-of-turn token and the newline the template writes after it. Generation markers give the same
spans; a template that renders earlier turns differently is handled by offsets or refused by row;
pad == eos keeps eos in TRL's labels after collation; truncation keeps the mask aligned; a model
without a template trains on prompt + completion + eos with only the completion in the loss.
"""

from __future__ import annotations

import copy
import re
from importlib import resources

import pytest

from tuneloop.errors import DatasetError
from tuneloop.training.tokenize import encode_row, has_generation_markers, tokenize_rows

CHATML = (  # SmolLM2's own template: a default system prompt, no generation markers
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

LLAMA3 = (  # Meta-Llama-3-8B-Instruct's template
    r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    r"message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    r"{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

GEMMA = (  # Gemma 3's template, text only: the system prompt goes into the first user turn
    r"{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'] + "
    r"'\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}"
    r"{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    r"{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    r"{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}{%- else -%}"
    r"{%- set role = message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if "
    r"loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}")

LLAMA3_MARKED = LLAMA3.replace(  # markers around the content only: the <|eot_id|> must still be trained
    r"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    r"'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}",
    r"{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}{{ '<|start_header_id|>' + message['role'] + "
    r"'<|end_header_id|>\n\n' }}{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] | trim }}"
    r"{% endgeneration %}{% else %}{{ message['content'] | trim }}{% endif %}{{ '<|eot_id|>' }}")

THINK_LAST = (  # Qwen3-like: only the last assistant turn gets an (empty) think block, so not prefix-stable
    r"{%- for message in messages -%}{%- if message['role'] == 'assistant' and loop.last -%}"
    r"{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message['content'] + '<|im_end|>\n' }}{%- else -%}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif -%}{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}")

THINK_STRIP = (  # Qwen3-like: earlier assistant turns lose their reasoning once the conversation goes on
    r"{%- for message in messages -%}{%- set content = message['content'] -%}"
    r"{%- if message['role'] == 'assistant' and not loop.last and '</think>' in content -%}"
    r"{%- set content = content.split('</think>')[-1].lstrip('\n') -%}{%- endif -%}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}")

# template, its control tokens (added as special tokens), bos, eos, end of turn + what follows it, how the spans
# are found. Llama 3's generation prompt ends in "\n\n", which this GPT-2-style tokenizer encodes as one token at
# the end of a text but as two before a word, so the prompt is no token prefix of the conversation: offsets it is.
FAMILIES = {
    "chatml": (CHATML, [], None, "<|im_end|>", "<|im_end|>\n", "prefix"),
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>", "offsets"),
    "gemma": (GEMMA, ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", "<end_of_turn>\n",
              "prefix"),
}

SYSTEM = {"role": "system", "content": "Answer with the city only."}
SINGLE = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]
MULTI = [SYSTEM, *SINGLE, {"role": "user", "content": "And of Italy, please?"},
         {"role": "assistant", "content": "Rome, since 1871."}]


@pytest.fixture(scope="session")
def real_tokenizer(real_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(real_gguf.parent), gguf_file=real_gguf.name)


@pytest.fixture
def tokenizer(real_tokenizer):
    """The real tokenizer with a family's template and control tokens (a fresh copy per call)."""
    def make(family: str | None = None, template: str | None = None):
        tok = copy.deepcopy(real_tokenizer)
        if family is not None:
            family_template, controls, bos, eos, _, _ = FAMILIES[family]
            if controls:
                tok.add_special_tokens({"additional_special_tokens": controls})
            if bos:
                tok.bos_token = bos
            tok.eos_token = eos
            tok.pad_token = eos
            tok.chat_template = family_template
        if template is not None:
            tok.chat_template = template
        return tok
    return make


def trained_runs(tok, enc) -> list[str]:
    """The decoded runs of trained tokens, in order."""
    runs, current = [], []
    for i, m in zip(enc.input_ids, enc.mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_trained_tokens_are_the_assistant_contents_and_their_end_of_turn(tokenizer, family):
    tok = tokenizer(family)
    closing, method = FAMILIES[family][4:]
    single = encode_row(tok, {"messages": SINGLE})
    multi = encode_row(tok, {"messages": MULTI})
    completion = encode_row(tok, {"prompt": "Capital of France?", "completion": "Paris."})
    print(family, single.method, repr(tok.decode(multi.input_ids)))
    assert single.method == multi.method == method
    assert trained_runs(tok, single) == ["Paris." + closing]
    assert trained_runs(tok, multi) == ["Paris." + closing, "Rome, since 1871." + closing]
    assert completion.input_ids == single.input_ids and completion.mask == single.mask
    # the ids are the template's rendering, tokenized as apply_chat_template tokenizes it
    assert multi.input_ids == list(tok.apply_chat_template(MULTI, tokenize=True, return_dict=True)["input_ids"])
    # the system prompt, user turns and headers are never trained
    assert "Answer with the city only." not in "".join(trained_runs(tok, multi))
    # a prompt that holds earlier turns trains only the completion
    context = encode_row(tok, {"prompt": MULTI[:4], "completion": "Rome, since 1871."})
    assert trained_runs(tok, context) == ["Rome, since 1871." + closing]


def test_generation_markers_give_the_same_spans(tokenizer):
    marked = resources.files("tuneloop.models").joinpath("chatml.jinja").read_text()   # the built-in models' template
    plain = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", marked)
    for with_markers, without in ((marked, plain), (LLAMA3_MARKED, LLAMA3)):
        family = "llama3" if with_markers is LLAMA3_MARKED else None
        a, b = tokenizer(family, with_markers), tokenizer(family, without)
        assert has_generation_markers(a) and not has_generation_markers(b)
        for row in ({"messages": MULTI}, {"messages": SINGLE}, {"prompt": "Capital of France?", "completion": "Paris."}):
            ea, eb = encode_row(a, row), encode_row(b, row)
            assert ea.method == "markers" and eb.method in ("prefix", "offsets")
            assert ea.input_ids == eb.input_ids and ea.mask == eb.mask, trained_runs(a, ea)
    assert trained_runs(a, encode_row(a, {"messages": MULTI})) == ["Paris.<|eot_id|>", "Rome, since 1871.<|eot_id|>"]


def test_a_template_that_is_not_prefix_stable_is_handled_by_offsets(tokenizer):
    tok = tokenizer(template=THINK_LAST)
    multi = encode_row(tok, {"messages": MULTI})
    assert multi.method == "offsets"
    # the last turn starts where its generation prompt ends, as a single turn's does: its think block is trained
    assert trained_runs(tok, multi) == ["Paris.<|im_end|>\n", "<think>\n\n</think>\n\nRome, since 1871.<|im_end|>\n"]
    single = encode_row(tok, {"messages": SINGLE})
    assert single.method == "prefix" and trained_runs(tok, single) == ["<think>\n\n</think>\n\nParis.<|im_end|>\n"]


def test_a_template_that_rewrites_an_assistant_turn_is_refused_by_row(tokenizer):
    tok = tokenizer(template=THINK_STRIP)
    assert trained_runs(tok, encode_row(tok, {"messages": MULTI})) == ["Paris.<|im_end|>\n", "Rome, since 1871.<|im_end|>\n"]
    thinking = [SYSTEM, SINGLE[0], {"role": "assistant", "content": "<think>France: Paris.</think>Paris."}, *MULTI[3:]]
    rows = [{"messages": MULTI}, {"messages": MULTI}, {"messages": thinking}]
    with pytest.raises(DatasetError) as e:
        tokenize_rows(tok, rows, None, "train.jsonl")
    print(e.value.render())
    assert "train.jsonl row 3" in e.value.message and "assistant" in e.value.message and e.value.hint


def test_a_conversation_without_an_assistant_turn_is_refused(tokenizer):
    with pytest.raises(DatasetError, match="row 7: the conversation has no assistant turn"):
        encode_row(tokenizer("chatml"), {"messages": MULTI[:2]}, where="row 7")


def test_truncation_keeps_the_mask_aligned_and_drops_rows_with_nothing_trained(tokenizer):
    tok = tokenizer("gemma")
    full = encode_row(tok, {"messages": MULTI})
    first = full.mask.index(1)
    rows = [{"messages": MULTI}, {"messages": [{"role": "user", "content": "word " * 200}, SINGLE[1]]}]
    columns, summary = tokenize_rows(tok, rows, first + 1, "train.jsonl")
    assert summary.rows == 1 and summary.dropped == 1 and summary.methods == {"prefix": 1}
    assert columns["input_ids"] == [full.input_ids[:first + 1]] and columns["assistant_masks"] == [full.mask[:first + 1]]
    assert tok.decode([i for i, m in zip(columns["input_ids"][0], columns["assistant_masks"][0]) if m]) == "Paris"
    assert "1 rows dropped" in summary.line("training data", first + 1)


def test_a_model_without_a_template_trains_on_prompt_plus_completion(tokenizer):
    tok = tokenizer()
    tok.chat_template = None
    enc = encode_row(tok, {"prompt": "The capital of France is", "completion": " Paris."})
    assert enc.method == "plain" and enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode([i for i, m in zip(enc.input_ids, enc.mask) if m]) == " Paris." + tok.eos_token
    assert tok.decode([i for i, m in zip(enc.input_ids, enc.mask) if not m]) == "The capital of France is"
    tok.add_bos_token = tok.add_eos_token = True   # a tokenizer that wraps every text in bos ... eos
    wrapped = encode_row(tok, {"prompt": "The capital of France is", "completion": " Paris."})
    assert wrapped.input_ids == [tok.bos_token_id] + enc.input_ids and wrapped.mask == [0] + enc.mask  # one eos, last
    columns, summary = tokenize_rows(tok, [{"prompt": "a", "completion": "b"}], None, "train.jsonl")
    assert "no chat template" in summary.line("training data", None)
    with pytest.raises(DatasetError, match="needs a chat template"):
        encode_row(tok, {"messages": MULTI}, where="train.jsonl row 1")


def test_pad_equal_to_eos_keeps_eos_in_trls_labels(tokenizer, tmp_path):
    """SmolLM2: pad == eos == <|im_end|>. TRL takes the pre-tokenized rows as they are (no second
    tokenization), labels from assistant_masks, and its collator masks padding by position."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = tokenizer()
    assert tok.pad_token_id == tok.eos_token_id
    rows = [{"messages": MULTI}, {"prompt": "Capital of France?", "completion": "Paris."}]
    columns, _ = tokenize_rows(tok, rows, 512, "train.jsonl")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id))
    args = SFTConfig(output_dir=str(tmp_path), max_length=512, completion_only_loss=False, report_to=[], use_cpu=True,
                     per_device_train_batch_size=2, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), processing_class=tok)
    prepared = trainer.train_dataset
    assert prepared["input_ids"] == columns["input_ids"]   # not re-tokenized
    batch = trainer.data_collator([prepared[0], prepared[1]])
    short = len(columns["input_ids"][1])
    labels, ids = batch["labels"], batch["input_ids"]
    for j, mask in enumerate(columns["assistant_masks"]):
        n = len(mask)
        expect = [t if m else -100 for t, m in zip(columns["input_ids"][j], mask)]
        assert labels[j, :n].tolist() == expect
        assert (labels[j, n:] == -100).all() and (batch["attention_mask"][j, n:] == 0).all()
    eos = tok.eos_token_id
    assert (ids[1, short:] == eos).all()   # padding is eos's id too ...
    trained_eos = [k for k in range(short) if columns["assistant_masks"][1][k] and ids[1, k] == eos]
    assert len(trained_eos) == 1 and labels[1, trained_eos[0]] == eos   # ... yet the real eos stays in the loss


def test_evaluation_scores_the_trained_tokens_of_every_turn(tokenizer):
    """tuneloop eval's SFT loss covers what training covers: every assistant turn of a messages row
    through its end-of-turn token, batched with right padding (pad == eos) as if each row were alone."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneloop.evaluation.metrics import row_logprobs

    tok = tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    rows = [{"messages": MULTI}, {"prompt": "Capital of France?", "completion": "Paris."}]
    got = row_logprobs(model, tok, rows)
    for row, (total, n, hits) in zip(rows, got):
        enc = encode_row(tok, row)
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0]
        logp = torch.log_softmax(logits, -1)
        idx = [k for k in range(1, len(enc.input_ids)) if enc.mask[k]]
        assert n == len(idx) == enc.trained
        assert total == pytest.approx(sum(logp[k - 1, enc.input_ids[k]].item() for k in idx), rel=1e-4)
        assert hits == sum(int(logits[k - 1].argmax() == enc.input_ids[k]) for k in idx)
    assert got[0][1] == len(tok("Paris.<|im_end|>\nRome, since 1871.<|im_end|>\n", add_special_tokens=False)["input_ids"])
