"""tuneloop demo [--model REF] [--dry-run] (run by `make demo`): the whole loop on the built-in
default model, or on any model the resolver takes (a folder, a catalog id, a .gguf file).

Shows the base model's answers, runs SFT (LoRA) on a bundled set, shows the tuned answers, runs
DPO on a bundled preference set, runs RLVR (GRPO) on a verifiable task after a short SFT warm start
(exact match on held-out prompts before/after), serves the SFT adapter with `tuneloop serve` and asks it through
the official openai client, and prints a summary: loss, exact match before/after, preference
accuracy before/after. Jobs go through the same service and runner processes as `tuneloop tune`,
in project `demo` of your TUNELOOP_HOME. `--model REF` runs every job, the evaluations and the
server on that model (the bundled tasks are plain chat questions: capitals, polite replies, copy a
word, which a real chat model answers through its template); `--dry-run` resolves the model,
stages the demo's data and prints each job's plan, training nothing.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tuneloop.data.staged import read_rows

PROJECT = "demo"


def _data(name: str) -> Path:
    return Path(str(resources.files("tuneloop") / "demo_data" / name))


def _run_job(console: Console, svc, technique: str, dataset: Path, model: str | None = None) -> dict:
    from tuneloop.cli.follow import follow
    from tuneloop.service.jobs import TuneRequest

    prep = svc.prepare(TuneRequest(technique=technique, dataset=str(dataset), project=PROJECT, model=model))
    p = prep.plan
    console.print(f"  plan: {p.device}/{p.precision}, batch {p.per_device_batch}x{p.grad_accum}, {p.total_steps} steps, "
                  f"lr {p.learning_rate:g}, LoRA r{p.lora_rank}")
    job = svc.submit(prep, force=True).job
    console.print(f"  job {job['id']} (runner process; `tuneloop logs {job['id']}` shows its events)")
    job = follow(svc, job["id"])
    if job["state"] != "completed":
        from tuneloop.errors import JobFailedError

        raise JobFailedError(f"Demo {technique} job {job['state']}: {job['error']}",
                             hint=f"See: tuneloop logs {job['id']} --project {PROJECT}")
    return job


def run_demo(keep: bool = False, model: str | None = None, dry_run: bool = False) -> int:
    from tuneloop.cli.common import service
    from tuneloop.errors import TuneloopError

    console = Console()
    try:
        if dry_run:
            return _dry_run(console, service(), model)
        return _demo(console, service(), model)
    except TuneloopError as e:
        console.print(e.render(), markup=False)
        return e.exit_code


def _resolve(svc, model: str):
    """The demo's model, checked as `tuneloop tune --technique sft --model REF` checks it."""
    from tuneloop.models.resolve import resolve

    return resolve(model, technique="sft", project=PROJECT, lookups=svc.model_lookups(),
                   models_dir=svc.settings.models_dir)


def _dry_run(console: Console, svc, model: str | None) -> int:
    """Resolve the model, stage the demo's data and plan its jobs (RLVR from the base model: its
    real run continues from the warm start's adapter); nothing is created."""
    from tuneloop.service.jobs import TuneRequest

    name = _resolve(svc, model).name if model else "tuneloop/tiny-qwen3"
    console.rule(f"[bold]Dry run: the demo's jobs on {name} (nothing is trained)")
    for label, technique, dataset, extra in (
            ("SFT", "sft", "sft.jsonl", {}), ("DPO", "dpo", "dpo.jsonl", {}),
            ("RLVR warm start (SFT)", "sft", "rlvr_warmstart.jsonl", {"hyperparameters": {"max_steps": 12}}),
            ("RLVR", "rlvr", "rlvr.jsonl", {"reward_function": "builtin:exact_match",
                                            "hyperparameters": {"max_steps": 30}})):
        prep = svc.prepare(TuneRequest(technique=technique, dataset=str(_data(dataset)), project=PROJECT, model=model,
                                       **extra), dry_run=True)
        p = prep.plan
        console.print(f"  {label}: model {prep.spec.model}, {prep.staged.rows} rows, {p.device}/{p.precision}, "
                      f"batch {p.per_device_batch}x{p.grad_accum}, {p.total_steps} steps, lr {p.learning_rate:g}, "
                      f"est. {p.est_time_s:.0f} s")
    return 0


def _demo(console: Console, svc, model: str | None = None) -> int:
    from tuneloop.evaluation.quick import exact_match, generate, load_for_eval, preference_accuracy
    from tuneloop.models.builtin import ensure_builtin

    started = time.monotonic()
    if model is None:
        model_id = "tuneloop/tiny-qwen3"
        base_dir = str(ensure_builtin(model_id, svc.settings.models_dir))
    else:  # any reference the resolver takes; a GGUF file is converted once here, the jobs reuse it
        ref = _resolve(svc, model)
        model_id, base_dir = ref.name, ref.load_path()
    sft_rows, dpo_rows = read_rows(_data("sft.jsonl")), read_rows(_data("dpo.jsonl"))
    prompts, refs = [r["prompt"] for r in sft_rows], [r["completion"] for r in sft_rows]

    console.rule(f"[bold]1. Base model {model_id}")
    base, tok = load_for_eval(base_dir)
    base_answers = generate(base, tok, prompts)
    em_before = exact_match(base_answers, refs)
    pref_before, _ = preference_accuracy(base, tok, dpo_rows)
    console.print(f"  exact match on {len(prompts)} bundled questions: {em_before:.0%}")

    console.rule("[bold]2. SFT (LoRA) on the bundled question set")
    sft_job = _run_job(console, svc, "sft", _data("sft.jsonl"), model)
    tuned, tok = load_for_eval(base_dir, sft_job["output_path"])
    tuned_answers = generate(tuned, tok, prompts)
    em_after = exact_match(tuned_answers, refs)

    table = Table(title="Answers through the chat template (greedy)", title_justify="left")
    for col in ("prompt", "expected", "base", "tuned"):
        table.add_column(col, overflow="fold")
    for p, r, b, t in list(zip(prompts, refs, base_answers, tuned_answers))[:8]:
        table.add_row(p, r, repr(b[:30]), ("✅ " if t.strip() == r else "❌ ") + t)
    console.print(table)

    console.rule("[bold]3. DPO (LoRA) on the bundled preference set")
    dpo_job = _run_job(console, svc, "dpo", _data("dpo.jsonl"), model)
    dpo_model, tok = load_for_eval(base_dir, dpo_job["output_path"])
    pref_after, _ = preference_accuracy(dpo_model, tok, dpo_rows)

    console.rule("[bold]4. RLVR (GRPO, LoRA) on a verifiable task: copy the colour word, reward builtin:exact_match")
    rl_before, rl_after, rl_job = _rlvr_stage(console, svc, base_dir, model)

    console.rule("[bold]5. Serve the SFT adapter (OpenAI-compatible) and ask it through the openai client")
    served_before, served_after = _serve_stage(console, svc, prompts[:6], refs[:6], model)

    console.rule("[bold]Summary")
    summary = Table(show_header=True)
    for col in ("stage", "metric", "before", "after"):
        summary.add_column(col)
    sm, dm = sft_job["metrics"] or {}, dpo_job["metrics"] or {}
    summary.add_row("SFT", "train loss (mean / last step)", "-", f"{sm.get('train_loss', 0):.3f} / {sm.get('final_loss', 0):.3f}")
    summary.add_row("SFT", "exact match, trained prompts", f"{em_before:.0%}", f"{em_after:.0%}")
    summary.add_row("DPO", "preference accuracy, log p(chosen) > log p(rejected)", f"{pref_before:.0%}", f"{pref_after:.0%}")
    summary.add_row("RLVR", "exact match, 64 held-out prompts (warm start -> RLVR)", f"{rl_before:.0%}",
                    f"{rl_after:.0%}")
    summary.add_row("Serve", "exact match through /v1/chat/completions (base / tuned-sft)", f"{served_before:.0%}",
                    f"{served_after:.0%}")
    console.print(summary)
    console.print(f"Done in {time.monotonic() - started:.0f} s. Outputs:\n  SFT adapter  {sft_job['output_path']}\n"
                  f"  DPO adapter  {dpo_job['output_path']}\n"
                  f"  RLVR adapter {rl_job['output_path']}\n"
                  f"Inspect: tuneloop status --project {PROJECT} | tuneloop registry list --project {PROJECT} | "
                  f"tuneloop config --project {PROJECT}")
    return 0


def _rlvr_stage(console: Console, svc, base_dir: str, model: str | None = None) -> tuple[float, float, dict]:
    """A short SFT teaches the answer format on 8 examples (project demo-warmstart, so the demo's
    SFT adapter stays the one served); RLVR continues from that adapter on 128 other prompts with
    a verifiable reward; exact match on 64 held-out prompts before and after."""
    from tuneloop.cli.follow import follow
    from tuneloop.errors import JobFailedError
    from tuneloop.evaluation.quick import exact_match, generate, load_for_eval
    from tuneloop.service.jobs import TuneRequest

    held = read_rows(_data("rlvr_heldout.jsonl"))
    prompts, refs = [r["prompt"][0]["content"] for r in held], [r["answer"] for r in held]
    jobs = {}
    for technique, request in (
        ("sft", TuneRequest(technique="sft", dataset=str(_data("rlvr_warmstart.jsonl")), project=f"{PROJECT}-warmstart",
                            model=model, hyperparameters={"max_steps": 12})),
        ("rlvr", None),
    ):
        if request is None:
            request = TuneRequest(technique="rlvr", dataset=str(_data("rlvr.jsonl")), project=PROJECT,
                                  model=jobs["sft"]["output_path"], reward_function="builtin:exact_match",
                                  hyperparameters={"max_steps": 30})
        prep = svc.prepare(request)
        p = prep.plan
        what = (f"{p.num_generations} completions x {p.global_batch // p.num_generations} prompts per step, "
                f"completions <= {p.max_response_length} tokens, kl {p.kl_coef:g}" if p.num_generations
                else f"batch {p.per_device_batch}x{p.grad_accum}")
        console.print(f"  {technique}: {p.total_steps} steps, lr {p.learning_rate:g}, {what}")
        job = svc.submit(prep, force=True).job
        job = follow(svc, job["id"])
        if job["state"] != "completed":
            raise JobFailedError(f"Demo {technique} job {job['state']}: {job['error']}",
                                 hint=f"See: tuneloop logs {job['id']} --project {request.project}")
        jobs[technique] = job
        if technique == "sft":
            model, tok = load_for_eval(base_dir, job["output_path"])
            before_answers = generate(model, tok, prompts, max_new_tokens=8)
    model, tok = load_for_eval(base_dir, jobs["rlvr"]["output_path"])
    after_answers = generate(model, tok, prompts, max_new_tokens=8)
    table = Table(title="Held-out prompts (greedy)", title_justify="left")
    for col in ("prompt", "expected", "warm start", "after RLVR"):
        table.add_column(col, overflow="fold")
    for p_, r, b, a in list(zip(prompts, refs, before_answers, after_answers))[:8]:
        table.add_row(p_, r, ("✅ " if b.strip() == r else "❌ ") + b, ("✅ " if a.strip() == r else "❌ ") + a)
    console.print(table)
    m = jobs["rlvr"]["metrics"] or {}
    console.print(f"  last step: reward {m.get('final_reward', 0):.2f} ± {m.get('final_reward_std', 0):.2f}, "
                  f"kl {m.get('final_kl', 0):.3g}; {m.get('reward_samples', 0)} completions scored")
    return exact_match(before_answers, refs), exact_match(after_answers, refs), jobs["rlvr"]


def _serve_stage(console: Console, svc, prompts: list[str], refs: list[str],
                 model: str | None = None) -> tuple[float, float]:
    """`tuneloop serve` in a subprocess, `adapter add tuned-sft --from-tune sft` hot-loads the SFT
    adapter, the openai client asks the base and the adapter; returns their exact match."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx
    import openai

    from tuneloop.service.deployments import DeploymentService

    deps = DeploymentService(svc.store, svc.settings, PROJECT)
    svc.store.delete_deployed(PROJECT, "tuned-sft")  # a re-run of the demo deploys it again
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = svc.settings.home / "deployments" / PROJECT / "serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUNELOOP_HOME": str(svc.settings.home), "TUNELOOP_DATABASE_URL": svc.settings.database_url,
           "TUNELOOP_MODELS_DIR": str(svc.settings.models_dir)}
    with open(log_path, "ab") as log:
        server = subprocess.Popen([sys.executable, "-m", "tuneloop", "serve", "--project", PROJECT, "--port", str(port)]
                                  + (["--model", model] if model else []), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                from tuneloop.errors import ServerError

                raise ServerError(f"tuneloop serve did not start; see {log_path}")
            time.sleep(0.5)
        console.print(f"  tuneloop serve --project {PROJECT} --port {port}{f' --model {model}' if model else ''}  "
                      f"(pid {server.pid})")
        change = deps.add_adapter("tuned-sft", from_tune=True, ref="sft")
        console.print(f"  tuneloop adapter add tuned-sft --from-tune sft  -> hot-loaded ({change.lineage})")
        client = openai.OpenAI(base_url=url + "/v1", api_key="demo")
        models = client.models.list().data
        console.print("  /v1/models: " + ", ".join(m.id for m in models))
        base = models[0].id

        def ask(model: str, prompt: str) -> str:
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                               temperature=0, max_tokens=16)
            return r.choices[0].message.content

        table = Table(title=f"Through the OpenAI endpoint {url}/v1 (openai client, greedy)", title_justify="left")
        for col in ("prompt", "expected", base, "tuned-sft"):
            table.add_column(col, overflow="fold")
        hits = {"base": 0, "tuned": 0}
        for p, r in zip(prompts, refs):
            b, t = ask(base, p), ask("tuned-sft", p)
            hits["base"] += b.strip() == r
            hits["tuned"] += t.strip() == r
            table.add_row(p, r, repr(b[:6]), ("✅ " if t.strip() == r else "❌ ") + t)
        console.print(table)
        return hits["base"] / len(prompts), hits["tuned"] / len(prompts)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
