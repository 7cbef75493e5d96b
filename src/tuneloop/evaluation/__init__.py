"""Evaluation: generation through the chat template, exact match, preference margins."""
