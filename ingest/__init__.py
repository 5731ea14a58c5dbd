"""The ingest command: ``python -m ingest PATH...`` (see ``ingest.cli``)."""
