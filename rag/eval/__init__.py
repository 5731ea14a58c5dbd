"""Evaluation commands: python -m rag.eval beir DIR | pubmedqa."""
