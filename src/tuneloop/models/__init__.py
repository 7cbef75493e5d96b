"""Models: which model a reference names (`resolve`), GGUF files read and converted once into a
cached folder (`gguf`), a model's shape without torch (`shape`), the local Hugging Face cache
(`hub`), the safetensors-only and no-model-code checks (`weights`) and the built-in tiny models
created offline on first use (`builtin`)."""
