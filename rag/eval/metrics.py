"""Ranking metrics with the standard BEIR / pytrec_eval definitions.

``qrels`` map a query id to ``{doc_id: grade}``; a ``run`` maps a query id to its ranked
doc ids (best first, no repeats). Only grades above zero count as relevant.

>>> qrels = {"q1": {"d1": 2, "d3": 1}}
>>> round(ndcg_at_k(["d3", "d2", "d1"], qrels["q1"], 10), 4)  # (1 + 2 / log2 4) / (2 + 1 / log2 3)
0.7602
>>> evaluate({"q1": ["d3", "d2", "d1"]}, qrels)["mrr@10"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Normalised DCG with graded relevance, linear gain and a log2 rank discount."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((grade for grade in relevant.values() if grade > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top ``k``."""
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top ``k`` (0 if none)."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def evaluate(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    ndcg_k: int = 10,
    recall_k: int = 100,
    mrr_k: int = 10,
) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries (a query missing from
    ``run`` scores zero, as in pytrec_eval)."""
    judged = [q for q, docs in qrels.items() if any(grade > 0 for grade in docs.values())]
    if not judged:
        raise ValueError("no query has a relevant document")
    totals = {f"ndcg@{ndcg_k}": 0.0, f"recall@{recall_k}": 0.0, f"mrr@{mrr_k}": 0.0}
    for query in judged:
        ranked, relevant = run.get(query, []), qrels[query]
        totals[f"ndcg@{ndcg_k}"] += ndcg_at_k(ranked, relevant, ndcg_k)
        totals[f"recall@{recall_k}"] += recall_at_k(ranked, relevant, recall_k)
        totals[f"mrr@{mrr_k}"] += mrr_at_k(ranked, relevant, mrr_k)
    return {name: value / len(judged) for name, value in totals.items()}
