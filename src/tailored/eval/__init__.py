"""Evaluation and generation (shared with serving)."""
