#!/usr/bin/env python
"""Evaluate the running stack's RAG answers (POST /rag, streamed) on a BEIR dataset.

    python scripts/eval_rag.py --dataset ../shared/data/beir/scifact --qrels ../shared/data/beir/scifact/qrels/test.tsv \
        --url http://127.0.0.1:8001 --collection scifact --questions 30
    python scripts/eval_rag.py --dataset DIR --qrels FILE --calibrate      # the support threshold, measured

Per question and in aggregate:

* answer rate — the answer is non-empty, not an echo of the question and not a stub (fewer than 3 content
  words, or ending in ':' like "The answer is:"): ``search_service.grounding.not_an_answer``, the service's
  own check;
* groundedness — the share of the answer's sentences supported by a sentence of the returned sources: MiniLM
  cosine >= the threshold (the judge model's ``EmbeddingModel.support_threshold``: MiniLM 0.6; ``--calibrate`` measures it);
  "grounded" = at least one supported sentence;
* citation validity — every cited id (the response's ``citations`` and ``[id]`` markers in the text) is a
  returned source; "cited" = at least one valid citation and no invalid one;
* citation relevance — a cited document is relevant per the qrels;
* retrieval hit — the sources contain a relevant document (the ceiling of citation relevance);
* TTFT (first answer delta) and total latency, p50/p95 (stack_dev.stats' percentile).

The judge is the project's own embedding model, loaded here (not the service's answer). Works with any qrels
file in BEIR format; questions are the qrels' queries in id order (the first ``--questions``). The last line
is the aggregate as one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx
import numpy as np

from search_service.grounding import MARKER, marker_ids, not_an_answer
from stack_dev.beir import read_corpus, read_qrels, read_queries, relevant
from stack_dev.stats import percentile

def answered(answer: str, question: str) -> bool:
    """Not empty, not a stub, not an echo of the question (search_service.grounding.not_an_answer)."""
    return not_an_answer(answer, question) is None


def read_stream(client: httpx.Client, body: dict) -> dict:
    """POST /rag with stream=true; the events, answer text, TTFT and total seconds."""
    t0 = time.perf_counter()
    ttft = None
    out: dict = {"deltas": [], "sources": [], "done": {}, "error": None}
    with client.stream("POST", "/rag", json={**body, "stream": True}) as r:
        if r.status_code != 200:
            r.read()
            return {**out, "status": r.status_code, "error": r.text[:300], "total_s": time.perf_counter() - t0}
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if event == "sources":
                    out["sources"] = obj.get("sources", [])
                elif event in ("done", "answer"):
                    out["done"].update(obj)
                elif event == "error":
                    out["error"] = obj
                elif "delta" in obj:
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                    out["deltas"].append(obj["delta"])
                event = None
    out["status"] = 200
    out["ttft_s"] = ttft
    out["total_s"] = time.perf_counter() - t0
    generated = "".join(out["deltas"])
    # the final answer (what citation spans point into) comes with the done event; an older server sends none
    out["answer"] = out["done"].get("answer", generated)
    return out


class Judge:
    """Sentence support with the project's embedding model (search_service.grounding)."""

    def __init__(self, models_dir: Path, model: str = "minilm") -> None:
        from search_service.embeddings import Embedder
        from search_service.grounding import split_sentences

        self.embedder = Embedder.load(model, models_dir, intra_op_threads=1)
        self.split = split_sentences
        self.threshold = self.embedder.spec.support_threshold

    def encode(self, texts: list[str]) -> np.ndarray:
        # symmetric comparisons: the query prefix on both sides (e5's advice; MiniLM has none), as RAG does
        return self.embedder.encode(texts, kind="query") if texts else np.zeros((0, self.embedder.dim), np.float32)

    def support(self, answer: str, source_texts: list[str]) -> tuple[int, int]:
        """(supported answer sentences, answer sentences)."""
        sents = [s.text for s in self.split(MARKER.sub("", answer))]
        src = [s.text for t in source_texts for s in self.split(t)]
        if not sents or not src:
            return 0, len(sents)
        sims = self.encode(sents) @ self.encode(src).T
        return int((sims.max(axis=1) >= self.threshold).sum()), len(sents)


def evaluate(args, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> list[dict]:
    judge = Judge(args.models_dir, args.judge_model)
    docs: dict[str, str] = {}
    rows = []
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        def doc_text(doc_id: str) -> str:
            if doc_id not in docs:
                r = client.get(f"/collections/{args.collection}/documents/{doc_id}")
                d = r.json() if r.status_code == 200 else {}
                docs[doc_id] = f"{d.get('title') or ''}\n{d.get('text') or ''}".strip()
            return docs[doc_id]

        for qid in [q for q in sorted(qrels, key=lambda x: (len(x), x)) if q in queries][:args.questions]:
            question = queries[qid]
            body = {"collection": args.collection, "query": question, **json.loads(args.body)}
            res = read_stream(client, body)
            answer = res.get("answer") or ""
            source_ids = [s["id"] for s in res["sources"]]
            rel = relevant(qrels[qid])
            cited = set()
            for c in res["done"].get("citations") or []:
                cited |= {s["id"] for s in c.get("sources", [])}
            if res["done"].get("answer_type", "generated") == "generated":      # an extract quotes sources'
                cited |= marker_ids(answer)                                  # own "[2]"-style references
            invalid = cited - set(source_ids)
            supported, n_sent = judge.support(answer, [doc_text(d) for d in source_ids])
            row = {
                "qid": qid, "status": res["status"], "answered": answered(answer, question),
                "grounded": supported > 0, "groundedness": (supported / n_sent) if n_sent else 0.0,
                "cited": bool(cited) and not invalid, "invalid_citations": sorted(invalid),
                "cited_relevant": bool(cited & rel), "retrieval_hit": bool(set(source_ids) & rel),
                "answer_type": res["done"].get("answer_type", "generated"),
                "ttft_s": res.get("ttft_s"), "total_s": res["total_s"], "answer": answer[:300],
            }
            rows.append(row)
            if args.verbose:
                print(json.dumps(row, ensure_ascii=False))
    return rows


def aggregate(rows: list[dict]) -> dict:
    n = len(rows)
    mean = lambda k: round(sum(float(r[k]) for r in rows) / n, 4) if n else 0.0   # noqa: E731
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    total = [r["total_s"] for r in rows]
    return {
        "questions": n, "errors": sum(r["status"] != 200 for r in rows),
        "answer_rate": mean("answered"), "grounded": mean("grounded"), "groundedness": mean("groundedness"),
        "cited": mean("cited"), "invalid_citation_rate": round(sum(bool(r["invalid_citations"]) for r in rows) / n, 4)
        if n else 0.0,
        "cited_relevant": mean("cited_relevant"), "retrieval_hit": mean("retrieval_hit"),
        "extractive": round(sum(r["answer_type"] == "extractive" for r in rows) / n, 4) if n else 0.0,
        "ttft_p50_s": round(percentile(ttft, 50), 3) if ttft else None,
        "total_p50_s": round(percentile(total, 50), 3) if total else None,
        "total_p95_s": round(percentile(total, 95), 3) if total else None,
    }


def calibrate(args, queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> None:
    """The threshold, measured: for each claim, the best cosine to a sentence of (a) its relevant abstracts
    (the evidence), (b) three abstracts retrieved for it that are not relevant (same topic, no evidence: the
    hard case) and (c) three random abstracts (off topic). The threshold is chosen between (a) and (c); (b)
    shows what a bi-encoder cannot tell apart."""
    import random

    judge = Judge(args.models_dir, args.judge_model)
    corpus = read_corpus(Path(args.dataset))
    rng = random.Random(7)
    ids = sorted(corpus)
    buckets: dict[str, list[float]] = {"relevant": [], "retrieved non-relevant": [], "random": []}
    with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
        for qid in [q for q in sorted(qrels, key=lambda x: (len(x), x)) if q in queries][:args.questions]:
            claim = queries[qid]
            rel = relevant(qrels[qid])
            r = client.post("/search/hybrid", json={"collection": args.collection, "query": claim, "limit": 10})
            others = [h["id"] for h in r.json()["results"] if h["id"] not in rel][:3]
            rand = [d for d in rng.sample(ids, 6) if d not in rel][:3]
            qv = judge.encode([claim])[0]
            for name, docs in (("relevant", rel), ("retrieved non-relevant", others), ("random", rand)):
                sents = [s.text for d in docs if d in corpus for s in judge.split(corpus[d].get("text", ""))]
                if sents:
                    buckets[name].append(float((judge.encode(sents) @ qv).max()))
    arr = {k: np.array(v) for k, v in buckets.items()}
    print(f"claims: {len(arr['relevant'])}; best cosine of a claim to a sentence of each kind of abstract")
    print(f"  {'':<5}" + "".join(f"{k:>24}" for k in arr))
    for p in (10, 25, 50, 75, 90):
        print(f"  p{p:<4}" + "".join(f"{percentile(v, p):>24.3f}" for v in arr.values()))
    pos, neg, hard = arr["relevant"], arr["random"], arr["retrieved non-relevant"]
    best = max(np.arange(0.3, 0.9, 0.01), key=lambda t: ((pos >= t).mean() + (neg < t).mean()) / 2)
    for t, what in ((best, "best balanced accuracy, relevant vs random"), (judge.threshold, "in use")):
        print(f"threshold {t:.2f} ({what}): relevant >= it {(pos >= t).mean():.2f}, random < it "
              f"{(neg < t).mean():.2f}, retrieved non-relevant < it {(hard < t).mean():.2f}")
    print(json.dumps({"claims": len(pos), "best_threshold": round(float(best), 2), "threshold": judge.threshold,
                      **{f"{k.replace(' ', '_')}_p50": round(percentile(v, 50), 3) for k, v in arr.items()},
                      "relevant_at_threshold": round(float((pos >= judge.threshold).mean()), 3),
                      "random_below_threshold": round(float((neg < judge.threshold).mean()), 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl)")
    ap.add_argument("--qrels", required=True, help="qrels file (BEIR tsv)")
    ap.add_argument("--url", default="http://127.0.0.1:8001")
    ap.add_argument("--collection", default="scifact")
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--body", default="{}", help='extra /rag request fields as JSON, e.g. \'{"limit": 3}\'')
    ap.add_argument("--models-dir", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--calibrate", action="store_true", help="measure the support threshold instead")
    ap.add_argument("--judge-model", default="minilm", help="embedding model that judges support (minilm; "
                    "multilingual-e5-small, which /rag uses for text outside MiniLM's scripts, e.g. Korean)")
    ap.add_argument("--verbose", action="store_true", help="print each question's row")
    args = ap.parse_args()
    queries = read_queries(Path(args.dataset) / "queries.jsonl")
    qrels = read_qrels(args.qrels)
    print(f"# {' '.join(__import__('sys').argv)}")
    if args.calibrate:
        calibrate(args, queries, qrels)
        return
    rows = evaluate(args, queries, qrels)
    agg = aggregate(rows)
    print(f"{'questions':<22}{agg['questions']}")
    for k, v in agg.items():
        if k != "questions":
            print(f"{k:<22}{v}")
    print(json.dumps(agg))


if __name__ == "__main__":
    main()
