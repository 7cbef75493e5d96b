"""Serving: the deploy half of the tune -> adapter -> deploy -> test loop.

    engine.py          the engine interface, sampling parameters, engine selection
    hf_engine.py       embedded engine: transformers + stacked multi-LoRA, continuous batching
    lora.py            LoRA weights of many PEFT adapters applied to one base in one batch
    batching.py        the scheduler: rows, decode steps, sampling
    text.py            streaming text with stop strings
    vllm_engine.py     `vllm serve --enable-lora` as the engine (GPU machines with vLLM)
    adapters.py        checks of adapter and full-model folders (no torch)
    deployments.py     what is deployed (database state), --from-tune resolution, the running server
    protocol.py        OpenAI request models, response bodies, the one error -> HTTP map
    server.py          the FastAPI app and `tuneloop serve`

Nothing here is imported by paths that do not serve; torch and transformers load inside the
engine only.
"""
