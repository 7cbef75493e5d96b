"""Built-in models: tiny, randomly initialised checkpoints created offline on first use."""
