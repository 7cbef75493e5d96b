"""Models: which model a reference names (`resolve`), its shape without torch (`shape`), the local
Hugging Face cache (`hub`), the safetensors-only check (`weights`) and the built-in tiny models
created offline on first use (`builtin`)."""
