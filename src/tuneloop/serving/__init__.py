"""Serving: the deploy half of the tune -> adapter -> deploy -> test loop.

    engine.py          the engine interface, sampling parameters, engine selection
    hf_engine.py       embedded engine: transformers + stacked multi-LoRA, continuous batching
    lora.py            LoRA weights of many PEFT adapters applied to one base in one batch
    batching.py        the scheduler: rows, decode steps, sampling
    text.py            streaming text with stop strings
    vllm_engine.py     `vllm serve --enable-lora` as the engine (GPU machines with vLLM)
    adapters.py        checks of adapter and full-model folders (no torch)
    weights.py         where a request may load weights from (model roots, the CLI's allow-list, URLs)
    limits.py          what one request may cost: body bytes (ASGI middleware), prompt length, tokens
    protocol.py        OpenAI request models, response bodies, the chat/text chunk shapes, and the
                       one map from errors (errors.py's family) to OpenAI error bodies
    completions.py     chat and text completions: tokenize, submit, answer, one SSE stream generator
    served.py          what a running server serves: checked, loaded into the engine, recorded
                       through its `Deployment` (the interface service/deployments.py implements)
    routes/            one router per API surface: health.py, openai.py, admin.py (and auth.py)
    server.py          `create_app` (serving objects on app.state, routers, error handlers, body
                       cap) and `run` (engine, app, uvicorn), which `tuneloop serve` calls through
                       the deployment service

Nothing here opens the store or imports the service layer: what is deployed lives in
service/deployments.py, which passes itself in as the `Deployment`.

Nothing here is imported by paths that do not serve; torch and transformers load inside the
engine only.
"""
