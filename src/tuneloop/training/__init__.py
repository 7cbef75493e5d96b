"""Planning and training on TRL + PEFT. Nothing outside this package imports TRL."""
