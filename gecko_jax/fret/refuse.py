"""Re-select the positive and hard negative of finished FRet records, without the teacher.

Every record stores each candidate's teacher scores (QL, RC) in retrieval order, so
stage 2's choice can be made again under another `relabel.RelabelConfig` (scorers,
negative strategy, rrf_k): the same `fuse_and_select` the pipeline runs, on the stored
scores. Under the run's own config this reproduces its records exactly. The candidate
texts come from the corpus the run retrieved from (ids -> rows). Records that the
run's filters dropped are not recovered; kept records are not filtered again.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from gecko_jax.data import fret_records
from gecko_jax.errors import GeckoError
from gecko_jax.fret import corpus as corpus_lib
from gecko_jax.fret import relabel as relabel_lib


def refuse_record(record: dict, corpus: Mapping[str, dict], cfg: relabel_lib.RelabelConfig,
                  seed: int = 0) -> dict:
    """One record re-selected under `cfg` (corpus: passage id -> {"id", "title", "text"};
    seed: the run's sampling seed, which draws `random` negatives)."""
    cands = sorted(record["candidates"], key=lambda c: c["retrieval_rank"])
    ids = [c["id"] for c in cands]
    missing = [i for i in ids if i not in corpus]
    if missing:
        raise GeckoError(f"record {record['id']}: candidate {missing[0]!r} is not in the "
                         "corpus (re-fusion needs the corpus the run retrieved from)")
    scored = relabel_lib.Scored([c["ql"] for c in cands], [c["rc"] for c in cands],
                                [c["rc_yes"] for c in cands],
                                [c["rc_no"] for c in cands] if cands[0]["rc_no"] is not None
                                else None)
    seed_pos = ids.index(record["seed_passage_id"]) if record["seed_passage_id"] in ids else None
    rel = relabel_lib.fuse_and_select(
        list(range(len(ids))), [c["retrieval_score"] for c in cands], scored, cfg,
        relabel_lib.query_rng(seed, record["seed_passage_id"]),
        documents=[corpus_lib.document_id(i) for i in ids], seed=seed_pos)

    def doc(k: int) -> dict:
        row = corpus[ids[k]]
        return fret_records.passage_json(ids[k], str(row.get("title") or ""), str(row["text"]))

    new_cands = [dict(c, rank_ql=rel.rank_ql[k], rank_rc=rel.rank_rc[k], fused=rel.fused[k],
                      fused_rank=rel.fused_rank[k]) for k, c in enumerate(cands)]
    provenance = dict(record.get("provenance", {}),
                      refused={"scorers": list(cfg.scorers), "negative": cfg.negative,
                               "rrf_k": cfg.rrf_k})
    return dict(record, positive=doc(rel.positive),
                negative=doc(rel.negative) if rel.negative is not None else None,
                positive_is_seed=ids[rel.positive] == record["seed_passage_id"],
                candidates=new_cands, provenance=provenance)


def refuse_records(records: Iterable[dict], corpus_rows: Iterable[dict],
                   cfg: relabel_lib.RelabelConfig, seed: int = 0) -> list[dict]:
    """`refuse_record` over records; corpus_rows: the run's corpus JSONL rows."""
    corpus = {str(r["id"]): r for r in corpus_rows}
    return [refuse_record(r, corpus, cfg, seed) for r in records]
