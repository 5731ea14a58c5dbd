"""Logging set-up shared by the command-line front ends."""

from __future__ import annotations

import logging
import os
import warnings

NOISY = ["grpc._server", "milvus_lite", "pymilvus", "httpx", "sentence_transformers", "transformers", "accelerate"]


def quiet_libraries() -> None:
    """Keep library chatter (gRPC stubs Milvus Lite lacks, tokenizer length notes) off the user's screen."""
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*Token indices sequence length.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries()
