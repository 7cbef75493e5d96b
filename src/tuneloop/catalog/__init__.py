"""The Supported Model Catalog (see `catalog.py`)."""

from tuneloop.catalog.catalog import (
    CATALOG_ENV,
    RL_TECHNIQUES,
    STALE_AFTER_DAYS,
    TECHNIQUES,
    TRAINING_TYPES,
    Catalog,
    ModelEntry,
    TechniqueEntry,
    load_catalog,
    normalize_technique,
    normalize_training_type,
    parse_catalog,
)

__all__ = [
    "CATALOG_ENV",
    "RL_TECHNIQUES",
    "STALE_AFTER_DAYS",
    "TECHNIQUES",
    "TRAINING_TYPES",
    "Catalog",
    "ModelEntry",
    "TechniqueEntry",
    "load_catalog",
    "normalize_technique",
    "normalize_training_type",
    "parse_catalog",
]
