"""One recipe per technique (torchtune's recipes): `sft.py`, `dpo.py`, and `grpo.py` for RLVR and
RLAIF, each on the interface in `base.py` (setup -> train -> validate -> save).

    result = recipe_for(spec.technique)(JobContext(...)).run()   # None: cancelled

A recipe module imports TRL only when it builds its trainer, and this package imports a recipe
module only when asked for it, so an SFT job never loads the reward machinery.
"""

from __future__ import annotations

import importlib

from tuneloop.catalog import RL_TECHNIQUES, TECHNIQUES
from tuneloop.errors import ValidationError
from tuneloop.training.recipes.base import JobContext, Recipe, RecipeResult

_RECIPES = {"sft": ("sft", "SFTRecipe"), "dpo": ("dpo", "DPORecipe"),
            **{t: ("grpo", "GRPORecipe") for t in RL_TECHNIQUES}}


def recipe_for(technique: str) -> type[Recipe]:
    """The recipe class that trains `technique`."""
    if technique not in _RECIPES:
        raise ValidationError(f"No training recipe for technique {technique!r}.", param="technique",
                              hint="Use --technique " + "|".join(TECHNIQUES) + ".")
    module, name = _RECIPES[technique]
    return getattr(importlib.import_module(f"tuneloop.training.recipes.{module}"), name)


__all__ = ["JobContext", "Recipe", "RecipeResult", "recipe_for"]
