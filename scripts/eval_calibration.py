#!/usr/bin/env python
"""Calibrated hybrid scores and the language gate, measured in process (issue 13, item 3).

For one embedding model, builds SciFact (+ one added one-word document, "beta": the nearest neighbour
of any junk query) and the project's Korean set (scripts/data/korean_eval) the way the service indexes
them — documents chunked as ingest does (``title\\nchunk``), BM25 chunk weights with the engine's IDF
(stack_dev.bm25, as scripts/dev/eval_fusion.py), each retriever's top-N chunks collapsed to documents —
and scores every query as ``SearchService`` does: the language gate (``text.query_script`` against the
model's ``scripts``), ``fusion.fuse`` with the service's default method and alpha, times
``fusion.confidence`` of ``vector_evidence`` / ``keyword_evidence``. The uncalibrated baseline is the same
run's fused score before the confidence factor.

Prints:

* the evidence's inputs: the best cosine and the best BM25 per query, for real and junk queries;
* the score of every relevant document in a real query's top 10, and every junk query's top score
  (stopwords only, emoji, keyboard mash, off-topic questions; Korean junk on the Korean set),
  calibrated and not, as percentiles, plus each junk query on its own line;
* for thresholds 0.1 .. 0.9: the share of relevant top-10 hits kept and of junk queries dropped (no
  result left), calibrated and not;
* nDCG@10 of the hybrid ranking (the confidence is one factor per query: the same with and without),
  and on the Korean set hit@1 / nDCG@10 with the gate and without it (both retrievers fused);
* with ``--sweep``: keep/drop at 0.3, 0.4 and 0.5 over a grid around the calibration numbers (tuning).

The document matrix is cached under ``--cache`` (SciFact's 5,300 chunks take ~2-3 min on one thread
with MiniLM). One ONNX thread, one BLAS thread.

    .venv/bin/python scripts/eval_calibration.py --embedding-model minilm
    .venv/bin/python scripts/eval_calibration.py --embedding-model multilingual-e5-small
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from search_service import fusion  # noqa: E402
from search_service.core.settings import Settings  # noqa: E402
from search_service.embedding_models import MODELS  # noqa: E402
from search_service.embeddings import Embedder  # noqa: E402
from search_service.ingest import chunk_words  # noqa: E402
from search_service.text import Analyzer, BM25Encoder, query_script, term_id  # noqa: E402
from stack_dev.beir import hit_at, ndcg_at, read_corpus, read_qrels, read_queries, relevant  # noqa: E402
from stack_dev.bm25 import doc_term_matrix  # noqa: E402
from stack_dev.machine import cpu_name  # noqa: E402
from stack_dev.procs import ROOT  # noqa: E402

SCIFACT = Path("/work/shared/data/beir/scifact")
KOREAN = ROOT / "scripts" / "data" / "korean_eval"
ADDED_DOC = {"_id": "added-beta", "title": "", "text": "beta"}

# Junk: nothing in either collection answers these. The first two are the issue's.
JUNK_EN = [
    # stopwords only
    "the of and", "what is the", "is it a", "how to do it", "and then there were",
    # emoji, symbols, punctuation
    "🙂🙂🙂", "👍", "🎉🎉 !!", "??? ...", "$$$ ### @@@",
    # keyboard mash
    "asdfghjkl qwerty", "zxcvbnm", "qwertyuiop asdf", "jkjkjk lololol", "hjkl;'[]",
    # off-topic questions
    "best pizza in Naples", "cheap flights to paris", "how do I reset my router password",
    "lyrics of bohemian rhapsody", "who won the football world cup", "weather tomorrow in london",
    "funny cat videos", "how to change a flat tire", "stock price of apple today", "python list comprehension",
]
JUNK_KO = [
    "ㅋㅋㅋㅋㅋ", "ㅎㅎ ㅠㅠ", "아아아아아", "안녕하세요 반갑습니다", "오늘 저녁 뭐 먹지",
    "비트코인 시세 알려줘", "주말에 볼 만한 영화 추천해 줘", "아이폰 배터리 교체 비용", "축구 경기 결과",
    "노래 가사 찾아줘",
]
THRESHOLDS = [round(0.1 * i, 1) for i in range(1, 10)]


@dataclass
class Scored:
    """One query's candidates and what the calibration saw."""
    query: str
    gated: bool                                  # vector side skipped by the language gate
    ranked: list[tuple[str, float]]              # (doc id, uncalibrated fused score), best first
    best_cos: float | None
    best_bm25: float | None
    points: int                                  # the collection's BM25 vectors (chunks): the keyword scale
    evidence: dict[str, float | None] = field(default_factory=dict)
    conf: float = 1.0


class Collection:
    """A dataset indexed as the service indexes it (chunks; dense + BM25), searchable in process."""

    def __init__(self, name: str, docs: list[dict], emb: Embedder, cache: Path, s: dict,
                 parent: "Collection | None" = None) -> None:
        self.name = name
        chunk_doc, texts = [], []
        for d in docs:
            body = d.get("text") or ""
            chunks = chunk_words(body, s["chunk_words"], s["chunk_overlap"]) if body.strip() else [""]
            for chunk in chunks:
                title = d.get("title") or ""
                texts.append(f"{title}\n{chunk}" if title else chunk)
                chunk_doc.append(str(d["_id"]))
        self.chunk_doc = np.asarray(chunk_doc, dtype=object)
        digest = hashlib.sha1("\x00".join(texts).encode()).hexdigest()[:12]
        path = cache / f"{name}-{emb.model_id.replace('/', '_').replace(':', '_')}-{len(texts)}-{digest}.npy"
        if parent is not None:       # a subset of an embedded collection: its chunks' rows
            row = {(d, t): i for i, (d, t) in enumerate(zip(parent.chunk_doc, parent.texts))}
            self.dmat = parent.dmat[[row[(d, t)] for d, t in zip(chunk_doc, texts)]]
        elif path.is_file():
            self.dmat = np.load(path)
        else:
            t0 = time.perf_counter()
            self.dmat = emb.encode(texts, batch_size=s["embed_batch_size"], max_tokens=s["embed_doc_tokens"])
            print(f"# {name}: embedded {len(texts)} chunks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, self.dmat)
        self.texts = texts
        self.analyzer = Analyzer()
        enc = BM25Encoder(self.analyzer)        # the service's k1 / b defaults
        self.bm25, self.vocab = doc_term_matrix(enc, texts)
        df = self.bm25.getnnz(axis=0)
        n = len(texts)
        self.idf = np.log(1 + (n - df + 0.5) / (df + 0.5))      # Qdrant's Modifier.Idf over points (chunks)
        self.n_docs, self.n_chunks = len(docs), n

    def _collapse(self, scores: np.ndarray, top_n: int, positive: bool) -> list[tuple[str, float]]:
        idx = np.argsort(-scores, kind="stable")[:top_n]     # top-N chunks, as the engine returns them
        seen, out = set(), []
        for i in idx:
            if positive and scores[i] <= 0:
                break
            d = self.chunk_doc[i]
            if d not in seen:
                seen.add(d)
                out.append((d, float(scores[i])))
        return out

    def lists(self, qvec: np.ndarray | None, query: str, top_n: int) -> dict[str, list[tuple[str, float]]]:
        out = {}
        if qvec is not None:
            out["vector"] = self._collapse(self.dmat @ qvec, top_n, positive=False)
        cols = [self.vocab[t] for t in sorted({term_id(x) for x in self.analyzer.tokens(query)}) if t in self.vocab]
        kw = np.asarray(self.bm25[:, cols] @ self.idf[cols]).ravel() if cols else np.zeros(self.n_chunks)
        out["keyword"] = self._collapse(kw, top_n, positive=True)
        return out


def score_query(coll: Collection, emb: Embedder, spec, query: str, s: dict, gate: bool = True) -> Scored:
    """What SearchService does for a default hybrid query (gate, fuse, confidence)."""
    script = query_script(query)
    gated = gate and script is not None and script not in spec.scripts
    qvec = None if gated else emb.encode([query], kind="query")[0]
    lists = coll.lists(qvec, query, s["candidates"])
    weights = fusion.resolve_weights(["keyword", "vector"], alpha=s["alpha"])
    if gated:       # a lone list: its fused ranking and scores do not depend on its weight
        fused = fusion.fuse(lists, method=s["fusion"])
    else:
        fused = fusion.fuse(lists, method=s["fusion"], alpha=s["alpha"])
    best_cos = lists["vector"][0][1] if lists.get("vector") else None
    best_bm25 = lists["keyword"][0][1] if lists["keyword"] else None
    sc = Scored(query, gated, [(f.id, f.score) for f in fused], best_cos, best_bm25, coll.n_chunks)
    return _calibrate(sc, weights, spec.cosine_unrelated, spec.cosine_related, fusion.BM25_EVIDENCE_TERMS)


def _calibrate(sc: Scored, weights: dict[str, float], unrelated: float, related: float, terms: float) -> Scored:
    scale = fusion.bm25_evidence_scale(sc.points, terms)
    ev: dict[str, float | None] = {"keyword": fusion.keyword_evidence(sc.best_bm25, scale)}
    if not sc.gated:
        ev["vector"] = fusion.vector_evidence(sc.best_cos, unrelated, related)
    w = {n: weights[n] for n in ev}
    sc.evidence = ev
    sc.conf = fusion.confidence(ev, w if sum(w.values()) > 0 else None)
    return sc


def small_subset(corpus: dict, qrels: dict, queries: dict, n_queries: int = 12, n_docs: int = 40):
    """The tests' small collection (tests/search_service/service_fixtures.py): the documents relevant to the
    first 12 SciFact test queries and random others, 40 in all (seed 7); and those queries."""
    import random

    chosen = [q for q in sorted(qrels, key=int) if q in queries][:n_queries]
    wanted = list(dict.fromkeys(d for q in chosen for d in sorted(relevant(qrels[q]))))
    others = [d for d in sorted(corpus) if d not in wanted]
    wanted += random.Random(7).sample(others, n_docs - len(wanted))
    return [corpus[d] for d in wanted], chosen


def pct(values: list[float], qs=(0, 5, 10, 25, 50, 75, 90, 95, 100)) -> str:
    if not values:
        return "(none)"
    a = np.asarray(values, dtype=float)
    return " | ".join(f"{np.percentile(a, q):.3f}" for q in qs)


PCT_HEAD = "| p0 (min) | p5 | p10 | p25 | p50 | p75 | p90 | p95 | p100 (max) |"


def relevant_hit_scores(scored: dict[str, Scored], qrels: dict[str, dict[str, int]]) -> tuple[list, list]:
    """(calibrated, uncalibrated) scores of every relevant document in a query's top 10."""
    cal, raw = [], []
    for qid, sc in scored.items():
        rel = relevant(qrels[qid])
        for d, s in sc.ranked[:10]:
            if d in rel:
                raw.append(s)
                cal.append(s * sc.conf)
    return cal, raw


def top_scores(scored: list[Scored]) -> tuple[list, list]:
    """(calibrated, uncalibrated) top score of each query (0 when it returns nothing)."""
    return ([sc.ranked[0][1] * sc.conf if sc.ranked else 0.0 for sc in scored],
            [sc.ranked[0][1] if sc.ranked else 0.0 for sc in scored])


def threshold_table(title: str, rel: tuple[list, list], junk: tuple[list, list]) -> None:
    print(f"\n{title}\n")
    print("| threshold | relevant top-10 hits kept, calibrated | kept, uncalibrated | junk queries dropped, "
          "calibrated | dropped, uncalibrated |\n|---|---|---|---|---|")
    for t in THRESHOLDS:
        kept = [sum(s >= t for s in v) / max(1, len(v)) for v in rel]
        dropped = [sum(s < t for s in v) / max(1, len(v)) for v in junk]
        print(f"| {t:.1f} | {kept[0]:.3f} | {kept[1]:.3f} | {dropped[0]:.3f} | {dropped[1]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedding-model", choices=sorted(MODELS), default="minilm")
    ap.add_argument("--scifact", type=Path, default=SCIFACT)
    ap.add_argument("--korean", type=Path, default=KOREAN)
    ap.add_argument("--queries", type=int, default=0, help="SciFact test queries to use (0: all 300)")
    ap.add_argument("--docs", type=int, default=0, help="SciFact documents besides the used queries' relevant "
                                                         "ones, drawn at random (seed 7) (0: the whole corpus); "
                                                         "for quick iterations with a slow model")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/eval_calibration"))
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--cosine-unrelated", type=float, help="override the model's calibration (exploring)")
    ap.add_argument("--cosine-related", type=float, help="override the model's calibration (exploring)")
    ap.add_argument("--bm25-terms", type=float, help=f"override fusion.BM25_EVIDENCE_TERMS "
                                                     f"({fusion.BM25_EVIDENCE_TERMS})")
    ap.add_argument("--sweep", action="store_true", help="keep/drop over a grid of calibration numbers")
    ap.add_argument("--no-korean", action="store_true")
    args = ap.parse_args()

    t_start = time.perf_counter()
    defaults = {k: Settings.model_fields[k].default for k in
                ("chunk_words", "chunk_overlap", "embed_batch_size", "embed_doc_tokens", "candidates", "fusion",
                 "alpha")}
    spec = MODELS[args.embedding_model]
    if defaults["alpha"] is None:                   # the service's default: the collection's model's own
        defaults["alpha"] = spec.fusion_alpha
    unrelated = spec.cosine_unrelated if args.cosine_unrelated is None else args.cosine_unrelated
    related = spec.cosine_related if args.cosine_related is None else args.cosine_related
    terms = fusion.BM25_EVIDENCE_TERMS if args.bm25_terms is None else args.bm25_terms
    print("command: " + " ".join(shlex.quote(a) for a in [".venv/bin/python", "scripts/eval_calibration.py"]
                                 + sys.argv[1:]))
    print(f"cpu: {cpu_name()}, 1 ONNX thread")
    print(f"model: {spec.model_id} (covers {', '.join(sorted(spec.scripts))}); calibration: cosine_unrelated "
          f"{unrelated}, cosine_related {related}, BM25 evidence scale {terms} x the largest idf; "
          f"fusion {defaults['fusion']} alpha "
          f"{defaults['alpha']}, top-{defaults['candidates']} chunks per retriever")

    emb = Embedder.load(args.embedding_model, models_dir=args.models_dir, intra_op_threads=1)
    try:
        corpus = read_corpus(args.scifact)
        qrels = {q: r for q, r in read_qrels(args.scifact / "qrels" / "test.tsv").items() if relevant(r)}
        queries = read_queries(args.scifact)
        qids = [q for q in qrels if q in queries]
        if args.queries:
            qids = qids[:args.queries]
        docs = list(corpus.values())
        if args.docs:
            import random

            keep = {str(d["_id"]) for d in small_subset(corpus, qrels, queries)[0]}    # the small set stays in
            keep |= {d for q in qids for d in relevant(qrels[q])}
            others = [d for d in sorted(corpus) if d not in keep]
            keep |= set(random.Random(7).sample(others, min(args.docs, len(others))))
            docs = [d for d in docs if str(d["_id"]) in keep]
        sci = Collection("scifact+beta", docs + [ADDED_DOC], emb, args.cache, defaults)
        sci_scored = {q: score_query(sci, emb, spec, queries[q], defaults) for q in qids}
        junk_en = [score_query(sci, emb, spec, q, defaults) for q in JUNK_EN]
        small_docs, small_qids = small_subset(corpus, qrels, queries)
        small = Collection("scifact-small", small_docs + [ADDED_DOC], emb, args.cache, defaults, parent=sci)
        small_scored = {q: score_query(small, emb, spec, queries[q], defaults) for q in small_qids}
        junk_small = [score_query(small, emb, spec, q, defaults) for q in JUNK_EN]
        ko = None
        if not args.no_korean:
            ko_corpus = read_corpus(args.korean)
            ko = Collection("korean_eval", list(ko_corpus.values()), emb, args.cache, defaults)
            ko_qrels = {q: r for q, r in read_qrels(args.korean / "qrels" / "test.tsv").items() if relevant(r)}
            ko_queries = read_queries(args.korean)
            ko_qids = [q for q in ko_qrels if q in ko_queries]
            ko_scored = {q: score_query(ko, emb, spec, ko_queries[q], defaults) for q in ko_qids}
            ko_ungated = {q: score_query(ko, emb, spec, ko_queries[q], defaults, gate=False) for q in ko_qids}
            junk_ko = [score_query(ko, emb, spec, q, defaults) for q in JUNK_KO]
    finally:
        emb.close()

    # re-apply the calibration being explored (the lists do not depend on it)
    weights = fusion.resolve_weights(["keyword", "vector"], alpha=defaults["alpha"])
    everything = list(sci_scored.values()) + junk_en + list(small_scored.values()) + junk_small
    if ko is not None:
        everything += list(ko_scored.values()) + list(ko_ungated.values()) + junk_ko
    for sc in everything:
        _calibrate(sc, weights, unrelated, related, terms)

    # (label, collection, {qid: Scored}, qrels, junk queries scored on that collection)
    sets = [("SciFact", sci, sci_scored, qrels, junk_en),
            ("SciFact small", small, small_scored, qrels, junk_small)]
    if ko is not None:
        sets.append(("Korean", ko, ko_scored, ko_qrels, junk_ko))
    print(f"\nSciFact: test queries ({len(qids)}, {sum(s.gated for s in sci_scored.values())} gated) over "
          f"{sci.n_docs} documents ({sci.n_chunks} chunks; the added one-word document 'beta' included); "
          f"{len(JUNK_EN)} English junk queries on it.")
    print(f"SciFact small: the tests' collection ({small.n_docs} documents, 'beta' included, {small.n_chunks} "
          f"chunks), the {len(small_qids)} queries whose relevant documents it holds; the same junk queries.")
    if ko is not None:
        print(f"Korean: {ko.n_docs} passages, {len(ko_qids)} questions ({sum(s.gated for s in ko_scored.values())} "
              f"gated to keyword alone); {len(JUNK_KO)} Korean junk queries on it.")
    print("BM25 evidence scale S per collection: " + ", ".join(
        f"{label} {fusion.bm25_evidence_scale(c.n_chunks, terms):.2f}" for label, c, *_ in sets))

    def row(name: str, vals: list) -> None:
        vals = [v for v in vals if v is not None]
        print(f"| {name} (n={len(vals)}) | {pct(vals)} |")

    print("\n## Evidence inputs and confidence (per query)\n")
    print(f"| | {PCT_HEAD[2:]}\n|---|" + "---|" * 9)
    for label, _, scored, _, junk in sets:
        real = list(scored.values())
        if any(not s.gated for s in real):
            row(f"{label} best cosine", [s.best_cos for s in real if not s.gated])
            row(f"{label} junk best cosine", [s.best_cos for s in junk if not s.gated])
        row(f"{label} best BM25 (0: none)", [s.best_bm25 or 0.0 for s in real])
        row(f"{label} junk best BM25 (0: none)", [s.best_bm25 or 0.0 for s in junk])
        row(f"{label} confidence", [s.conf for s in real])
        row(f"{label} junk confidence", [s.conf for s in junk])
    if ko is not None:
        row("Korean best cosine (without the gate)", [s.best_cos for s in ko_ungated.values()])

    print("\n## Scores: every relevant document in a query's top 10; each junk query's top result\n")
    print(f"| | {PCT_HEAD[2:]}\n|---|" + "---|" * 9)
    results = {}
    for label, _, scored, rels, junk in sets:
        results[label] = (relevant_hit_scores(scored, rels), top_scores(junk))
        (rc, ru), (jc, ju) = results[label]
        row(f"{label} relevant hits, calibrated", rc)
        row(f"{label} relevant hits, uncalibrated", ru)
        row(f"{label} junk top score, calibrated", jc)
        row(f"{label} junk top score, uncalibrated", ju)

    print("\n## Junk queries, one by one\n")
    print("| query | collection | script | top document | top score uncal. | calibrated | confidence | "
          "e_vector (best cos) | e_keyword (best BM25) |\n|---|---|---|---|---|---|---|---|---|")
    for label, _, _, _, junk in sets:
        for sc in junk:
            top = sc.ranked[0] if sc.ranked else ("-", 0.0)
            ev = sc.evidence
            evv = "skipped (gate)" if sc.gated else f"{ev['vector']:.3f} ({sc.best_cos:.3f})"
            evk = f"{ev['keyword']:.3f} ({sc.best_bm25:.2f})" if sc.best_bm25 else "0 (no hit)"
            print(f"| {sc.query} | {label} | {query_script(sc.query)} | {top[0]} | {top[1]:.4f} | "
                  f"{top[1] * sc.conf:.4f} | {sc.conf:.3f} | {evv} | {evk} |")

    for label, *_ in sets:
        threshold_table(f"## Thresholds, {label}: relevant top-10 hits kept, junk queries dropped", *results[label])

    print("\n## Ranking (the confidence is one factor per query: the same ranking calibrated or not)\n")
    for sc in everything:
        cal = [s * sc.conf for _, s in sc.ranked]
        assert all(a >= b for a, b in zip(cal, cal[1:])), sc.query
    nd = np.mean([ndcg_at([d for d, _ in sci_scored[q].ranked], qrels[q], 10) for q in qids])
    print(f"SciFact hybrid nDCG@10: {nd:.4f} (calibrated = uncalibrated)")
    if ko is not None:
        for name, sc in (("with the language gate", ko_scored), ("without it (both retrievers fused)", ko_ungated)):
            h1 = np.mean([hit_at([d for d, _ in sc[q].ranked], ko_qrels[q], 1) for q in ko_qids])
            n10 = np.mean([ndcg_at([d for d, _ in sc[q].ranked], ko_qrels[q], 10) for q in ko_qids])
            print(f"Korean hybrid {name}: hit@1 {h1:.3f} ({round(h1 * len(ko_qids))}/{len(ko_qids)}), "
                  f"nDCG@10 {n10:.4f}")

    if args.sweep:
        cuts = (0.3, 0.4, 0.5)
        head = " | ".join(f"kept@{t} | dropped@{t}" for t in cuts)
        print("\n## Sweep: relevant top-10 hits kept / junk queries dropped per threshold, per set ("
              + ", ".join(label for label, *_ in sets) + ")\n")
        print("| cos unrelated | cos related | BM25 terms | " + " | ".join(f"{label[:2]} {head}" for label, *_ in sets)
              + " |\n|---|---|---|" + "---|" * (len(cuts) * 2 * len(sets)))

        def cells(rel: list, junk: list) -> str:
            return " | ".join(f"{np.mean([x >= t for x in rel]):.3f} | {np.mean([x < t for x in junk]):.3f}"
                              for t in cuts)

        for u in sorted({round(unrelated + d, 2) for d in (-0.05, 0.0, 0.05)}):
            for r in sorted({round(related + d, 2) for d in (-0.05, 0.0, 0.05)}):
                if r <= u:              # (a narrow calibration's grid: related must stay above unrelated)
                    continue
                for k in (0.6, 0.8, 1.0, 1.25, 1.5):
                    for sc in everything:
                        _calibrate(sc, weights, u, r, k)
                    print(f"| {u:.2f} | {r:.2f} | {k:.2f} | " + " | ".join(
                        cells(relevant_hit_scores(scored, rels)[0], top_scores(junk)[0])
                        for _, _, scored, rels, junk in sets) + " |")
    print(f"\n# {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
