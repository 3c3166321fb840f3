"""Data: read files into records, validate them line by line, tokenize with assistant-only labels, batch.

No model code lives here; a tokenizer is passed in where one is needed.
"""
