"""Factories for tests and docs: tiny random models and tokenizers built in memory (no network)."""
