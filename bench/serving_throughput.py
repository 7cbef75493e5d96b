"""python bench/serving_throughput.py [--model tuneloop/tiny-qwen3 | FOLDER] [--clients 8] [--requests 4]
                                    [--max-tokens 64] [--repeats 3] [--decode-tokens 128] [--threads N]
                                    [--append]

The real model: `python bench/serving_throughput.py --model /tmp/smollm2-hf --requests 2 --repeats 5`
(a safetensors folder of SmolLM2-135M-Instruct; see bench/RESULTS.md for how to make it).

Serving throughput, all in one script so ratios share one machine state:

1. generated tokens/s with N concurrent clients (the official openai client, one thread each,
   chat completions, greedy) against `tuneloop serve`, vs the baseline "generate-loop": plain
   transformers `model.generate` answering the same requests one at a time in this process;
2. mixed-adapter batches (clients spread over the base and two LoRA adapters) vs
   single-adapter batches (every client on one adapter), same server, runs alternating;
3. single-stream decode tokens/s (one streaming client, time from the first to the last chunk)
   vs `model.generate` with one request, default cache and `cache_implementation="static"`, put
   against the machine's limit: weight bytes read per token / measured memory read bandwidth;
4. for reference, one decode step (batch N) of PEFT's own mixed-batch path
   (`model(..., adapter_names=[...])`) vs PEFT with one adapter set, and the same for
   tuneloop's stacked multi-LoRA (lora.py), in this process.

Adapters are random LoRA (rank 64, all linear layers): throughput does not depend on what they
learned. Medians (and min-max) over --repeats; --append adds the results to bench/RESULTS.md under "## Serving".
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is the capital of France?", "Summarize photosynthesis in one sentence.",
             "Write a haiku about coding.", "What causes rain?", "Explain gravity to a child.",
             "Name three prime numbers.", "Spell cat backwards.", "How many legs does a spider have?"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapters(base: Path, out: Path, names: tuple[str, ...] = ("a", "b")) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for i, name in enumerate(names):
        torch.manual_seed(100 + i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                               LoraConfig(r=64, lora_alpha=128, target_modules="all-linear", init_lora_weights=False))
        # small random B: outputs change but stay a plausible length
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.mul_(0.05)
        model.save_pretrained(out / name)
        paths[name] = out / name
    return paths


_LOADED: dict[str, tuple] = {}


def _model(base: Path):
    """The baseline's model and tokenizer, loaded once (fp32, eval)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(base) not in _LOADED:
        _LOADED[str(base)] = (AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval(),
                              AutoTokenizer.from_pretrained(base))
    return _LOADED[str(base)]


def generate_loop(base: Path, prompts: list[str], max_tokens: int) -> tuple[float, int]:
    """Baseline: transformers generate, one request at a time, greedy. Returns (seconds, tokens)."""
    import torch

    model, tok = _model(base)
    encoded = [tok(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True), return_tensors="pt") for p in prompts]
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for enc in encoded:
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - enc["input_ids"].shape[1]
    return time.perf_counter() - start, tokens


def load_clients(url: str, models: list[str], clients: int, requests: int, max_tokens: int) -> tuple[float, int]:
    """`clients` threads, each sending `requests` chat completions in turn; client i uses
    models[i % len(models)]. Returns (seconds, completion tokens)."""
    import openai

    totals = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
        barrier.wait()
        for j in range(requests):
            r = client.chat.completions.create(
                model=models[i % len(models)], temperature=0, max_tokens=max_tokens,
                messages=[{"role": "user", "content": QUESTIONS[(i + j) % len(QUESTIONS)]}])
            totals[i] += r.usage.completion_tokens

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, sum(totals)


def generate_decode_rate(base: Path, prompt: str, max_tokens: int, cache: str | None) -> float:
    """Single-stream decode tokens/s of `model.generate` (greedy): tokens after the first over the
    time from the first new token to the last (a streamer stamps each), so prefill is left out."""
    import torch

    model, tok = _model(base)
    enc = tok(tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                      add_generation_prompt=True), return_tensors="pt")
    stamps: list[float] = []

    class Stamps:
        def put(self, value):
            stamps.append(time.perf_counter())

        def end(self):
            pass

    kwargs = {"cache_implementation": cache} if cache else {}
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                       streamer=Stamps(), **kwargs)
    stamps = stamps[1:]  # the first put is the prompt
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def serve_decode_rate(url: str, model: str, prompt: str, max_tokens: int) -> float:
    """Single-stream decode tokens/s through the server: one streaming chat completion, tokens after
    the first over the time from the first content chunk to the last."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    stamps: list[float] = []
    tokens = 0
    for chunk in client.chat.completions.create(model=model, temperature=0, max_tokens=max_tokens, stream=True,
                                                stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": prompt}]):
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return (tokens - 1) / (stamps[-1] - stamps[0])


def memory_bound(base: Path) -> dict[str, float]:
    """Weight bytes one decode step reads (each parameter once: tied embeddings count once, as the
    output layer) and the measured memory read bandwidth (best of 5 sums over a 1 GiB tensor)."""
    import torch

    model, _ = _model(base)
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    big = torch.ones(256 * 1024 * 1024)
    big.sum()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - start)
    bandwidth = big.numel() * big.element_size() / best
    return {"weight_mb": weight_bytes / 1e6, "bandwidth_gbs": bandwidth / 1e9, "tokens_s": bandwidth / weight_bytes}


def step_times(base: Path, adapters: dict[str, Path], batch: int, steps: int = 24, repeats: int = 5) -> dict[str, float]:
    """Median ms per decode step, batch `batch`: PEFT mixed / single vs stacked mixed / single."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from tuneloop.serving.lora import LoraSet

    tok = AutoTokenizer.from_pretrained(base)
    tok.padding_side = "left"
    enc = tok([QUESTIONS[i % len(QUESTIONS)] for i in range(batch)], return_tensors="pt", padding=True)
    names = list(adapters)
    mixed = [(["__base__"] + names)[i % (len(names) + 1)] for i in range(batch)]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapters[names[0]],
                                     adapter_name=names[0])
    for n in names[1:]:
        peft.load_adapter(adapters[n], adapter_name=n)
    peft.eval()
    ours = AutoModelForCausalLM.from_pretrained(base).eval()
    loras = LoraSet(ours)
    for n in names:
        loras.load(n, adapters[n])

    def run(model, kwargs) -> float:
        cache, ids, mask = DynamicCache(), enc["input_ids"], enc["attention_mask"]
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True, **kwargs)
            start = time.perf_counter()
            for _ in range(steps):
                mask = torch.cat([mask, mask.new_ones((batch, 1))], 1)
                out = model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask, past_key_values=cache,
                            use_cache=True, **kwargs)
        return (time.perf_counter() - start) / steps * 1000

    def ours_with(slots):
        loras.select(slots)
        return run(ours, {})

    cases = {
        "peft_mixed": lambda: run(peft, {"adapter_names": mixed}),
        "peft_single": lambda: (peft.set_adapter(names[0]), run(peft, {}))[1],
        "stacked_mixed": lambda: ours_with([0 if n == "__base__" else loras.slot(n) for n in mixed]),
        "stacked_single": lambda: ours_with([loras.slot(names[0])] * batch),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            times[k].append(fn())
    return {k: statistics.median(v) for k, v in times.items()}


class Server:
    def __init__(self, home: Path, port: int, model: str, threads: int | None):
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "TUNELOOP_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        self.log = open(home / "serve.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--model", model, "--port", str(port),
                                      *(["--threads", str(threads)] if threads else [])],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        import httpx

        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    models = httpx.get(self.url + "/v1/models", timeout=10).json()["data"]
                    self.base = models[0]["id"]  # the name the server gives a folder or id
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit("server did not start: " + (home / "serve.log").read_text())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def append_section(path: Path, heading: str, block: str) -> None:
    """Add `block` at the end of section `heading` (created at the end of the file if missing)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if f"\n{heading}\n" not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n"
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    nxt = text.find("\n## ", start)
    end = len(text) if nxt < 0 else nxt
    path.write_text(text[:end].rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n" + text[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tuneloop/tiny-qwen3", help="a built-in model id or a model folder")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=4, help="requests per client per run")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=128, help="tokens of each single-stream decode run")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads, for the server and the baseline alike (default: torch's choice, "
                         "every core)")
    ap.add_argument("--append", action="store_true", help="append the results to bench/RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["TUNELOOP_HOME"] = str(home)
        from tuneloop.models.builtin import ensure_builtin
        from tuneloop.settings import load_settings

        base = Path(args.model) if Path(args.model).is_dir() else ensure_builtin(args.model, load_settings().models_dir)
        adapters = make_adapters(base, Path(tmp))
        n_requests = args.clients * args.requests
        prompts = [QUESTIONS[(i % args.clients + i // args.clients) % len(QUESTIONS)] for i in range(n_requests)]

        server = Server(home, _free_port(), args.model, args.threads)
        try:
            for name, path in adapters.items():
                r = subprocess.run([sys.executable, "-m", "tuneloop", "adapter", "add", name, "--weights", str(path)],
                                   env={**os.environ}, capture_output=True, text=True, cwd=REPO)
                assert r.returncode == 0, r.stderr
            name = server.base
            load_clients(server.url, [name], args.clients, 1, 8)  # warm-up
            generate_loop(base, prompts[:2], 8)
            story = "Write a long story about a dragon."
            decode_tokens = args.decode_tokens
            rows: dict[str, list[float]] = {k: [] for k in ("serve", "loop", "single", "mixed", "stream",
                                                            "gen_stream", "gen_static")}
            for _ in range(args.repeats):  # alternate the runs: machine noise hits all of them
                s, t = load_clients(server.url, [name], args.clients, args.requests, args.max_tokens)
                rows["serve"].append(t / s)
                s, t = generate_loop(base, prompts, args.max_tokens)
                rows["loop"].append(t / s)
                s, t = load_clients(server.url, ["a"], args.clients, args.requests, args.max_tokens)
                rows["single"].append(t / s)
                s, t = load_clients(server.url, [name, "a", "b"], args.clients, args.requests, args.max_tokens)
                rows["mixed"].append(t / s)
                rows["stream"].append(serve_decode_rate(server.url, name, story, decode_tokens))
                rows["gen_stream"].append(generate_decode_rate(base, story, decode_tokens, None))
                rows["gen_static"].append(generate_decode_rate(base, story, decode_tokens, "static"))
            import httpx

            batching = httpx.get(server.url + "/health").json()["batching"]
        finally:
            server.stop()
        bound = memory_bound(base)
        steps = step_times(base, adapters, args.clients)

    med = {k: statistics.median(v) for k, v in rows.items()}

    def spread(k: str) -> str:
        return f"{min(rows[k]):.0f}-{max(rows[k]):.0f}"

    command = "python bench/serving_throughput.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "append" and v is not None)
    lines = [
        f"`{command}` ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores, torch threads "
        f"{torch.get_num_threads()}; medians of {args.repeats}, min-max in brackets; load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
        "",
        "| run | generated tokens/s | ratio |",
        "|---|---|---|",
        f"| baseline generate-loop: transformers `generate`, one request at a time | {med['loop']:.0f} "
        f"({spread('loop')}) | 1.00 |",
        f"| `tuneloop serve`, {args.clients} concurrent openai clients, base model | {med['serve']:.0f} "
        f"({spread('serve')}) | {med['serve'] / med['loop']:.2f} |",
        f"| `tuneloop serve`, {args.clients} clients, all on adapter a (single-adapter batches) | {med['single']:.0f} "
        f"({spread('single')}) | {med['single'] / med['loop']:.2f} |",
        f"| `tuneloop serve`, {args.clients} clients on base / a / b (mixed-adapter batches) | {med['mixed']:.0f} "
        f"({spread('mixed')}) | {med['mixed'] / med['loop']:.2f} |",
        "",
        f"Single-stream decode ({decode_tokens} tokens at most, greedy, prefill excluded), tokens/s: "
        f"`tuneloop serve` streaming {med['stream']:.1f} ({min(rows['stream']):.1f}-{max(rows['stream']):.1f}); "
        f"`model.generate` {med['gen_stream']:.1f} ({min(rows['gen_stream']):.1f}-{max(rows['gen_stream']):.1f}); "
        f"`model.generate(cache_implementation=\"static\")` {med['gen_static']:.1f} "
        f"({min(rows['gen_static']):.1f}-{max(rows['gen_static']):.1f}). Memory bound: "
        f"{bound['weight_mb']:.0f} MB of weights per token / {bound['bandwidth_gbs']:.1f} GB/s measured read "
        f"bandwidth = {bound['tokens_s']:.0f} tokens/s.",
        "",
        f"Mixed-adapter overhead vs single-adapter: {(med['single'] / med['mixed'] - 1) * 100:+.1f}% "
        f"(single / mixed tokens/s - 1; runs: single {', '.join(f'{x:.0f}' for x in rows['single'])}; "
        f"mixed {', '.join(f'{x:.0f}' for x in rows['mixed'])}).",
        f"Server batching: {batching['forwards']} forwards, up to {batching['max_rows']} rows, "
        f"{batching['mixed_forwards']} with more than one adapter. Machine load average at the end: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared with other work).",
        "",
        f"One decode step, batch {args.clients}, in process (median ms): PEFT `adapter_names` mixed "
        f"{steps['peft_mixed']:.2f} vs PEFT one adapter {steps['peft_single']:.2f} "
        f"({(steps['peft_mixed'] / steps['peft_single'] - 1) * 100:+.0f}%); tuneloop stacked multi-LoRA mixed "
        f"{steps['stacked_mixed']:.2f} vs one adapter {steps['stacked_single']:.2f} "
        f"({(steps['stacked_mixed'] / steps['stacked_single'] - 1) * 100:+.0f}%).",
        "",
    ]
    print("\n".join(lines))
    if args.append:
        append_section(REPO / "bench" / "RESULTS.md", "## Serving", "\n".join(lines))


if __name__ == "__main__":
    main()
