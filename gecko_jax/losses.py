"""The Gecko contrastive loss: in-batch + hard + same-tower negatives, masks, MRL.

Pure functions of arrays; nothing here reads config. Paper (GECKO.md), for a
batch of (q_i, p_i+, p_i-) and cosine similarity s:

    L = 1/B sum_i -log( e^{s(q_i,p_i+)/tau} /
          ( sum_j [ e^{s(q_i,p_j+)/tau} + 1[j != i] e^{s(q_i,q_j)/tau} ]
            + e^{s(q_i,p_i-)/tau} ) )

Column layout of the logits for row i (the target is ALWAYS column i, a
positive; hard negatives live in their own block after all B positives, so a
row can never be trained toward its hard negative):

    [ p_0 .. p_{B-1} | hard negatives | q_0 .. q_{B-1} (same-tower) ]
      B columns        k (own) or B*k   B columns, q_i itself masked

Under `jax.jit` with the batch sharded over devices, B is the GLOBAL batch:
`q @ p.T` over the sharded arrays is the cross-device similarity matrix, so a
positive held on another device is a negative for this row with no explicit
all-gather in user code.

False negatives: every item carries an integer text id (a hash of its text,
with its title for titled documents; see data/tasks.py). For row i, any
in-batch item other than its own positive whose id equals the row's positive
id or query id is masked out (Gemini Embedding's duplicate masking;
t5x_retrieval masks duplicate positives the same way), and so is the positive
p_j of every row j that shares row i's query id: several positives of one
query (an NLI premise's entailed hypotheses, a BEIR query's judged documents)
are never each other's negatives. Hard negatives of such rows stay negatives.
Classification as retrieval gives the query and positive of every example of
one label the label group's id (data/tasks.gecko_format), so the same masks
keep same-label items from being each other's negatives at any text length.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from gecko_jax.models.dual_encoder import matryoshka

# Masked logits get this value instead of -inf: exp() underflows to exactly 0
# in float32, and gradients stay finite.
MASK_VALUE = -1e9
# Id meaning "no text here" (padding / missing hard negative): never matches.
NO_ID = -1


def _same_id(a: jax.Array, b: jax.Array) -> jax.Array:
    """Broadcast equality of ids, False wherever either side is NO_ID."""
    return (a == b) & (a != NO_ID) & (b != NO_ID)


def gecko_logits(
    q_bd: jax.Array,
    p_bd: jax.Array,
    n_bkd: jax.Array | None,
    *,
    tau: float,
    same_tower: bool = True,
    all_hard_negatives: bool = False,
    query_ids: jax.Array | None = None,
    positive_ids: jax.Array | None = None,
    negative_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Similarities and validity mask for the query -> document softmax.

    Args:
      q_bd: query embeddings [B, d], unit norm.
      p_bd: positive embeddings [B, d], unit norm.
      n_bkd: hard negative embeddings [B, k, d] (k >= 0) or None.
      tau: temperature.
      same_tower: add q_j (j != i) as negatives for row i.
      all_hard_negatives: row i also sees every other row's hard negatives.
      query_ids, positive_ids: int [B] text ids, or None (no duplicate masks).
      negative_ids: int [B, k] text ids; NO_ID marks a missing hard negative.

    Returns:
      (sim [B, C] cosine similarities, valid [B, C] bool, logits [B, C]) with
      C = B + (k or B*k) + (B if same_tower); the target of row i is column i.
    """
    b = q_bd.shape[0]
    k = 0 if n_bkd is None else n_bkd.shape[1]
    eye = jnp.eye(b, dtype=bool)
    have_ids = query_ids is not None and positive_ids is not None
    if have_ids:
        qid_b1 = query_ids[:, None]
        pid_b1 = positive_ids[:, None]

    # Block 1: all positives of the global batch. Target = diagonal.
    sims = [q_bd @ p_bd.T]                                     # [B, B]
    if have_ids:
        dup = (_same_id(positive_ids[None, :], pid_b1) | _same_id(positive_ids[None, :], qid_b1)
               # p_j of a row with the same query is another positive of q_i.
               | _same_id(query_ids[None, :], qid_b1))
        valid = [~dup | eye]                                   # keep own positive
    else:
        valid = [jnp.ones((b, b), bool)]

    # Block 2: hard negatives (own row's, or every row's).
    if k:
        if negative_ids is None:
            negative_ids = jnp.zeros((b, k), jnp.int32)        # all present, no ids
            neg_present = jnp.ones((b, k), bool)
            neg_ids_for_dup = None
        else:
            neg_present = negative_ids != NO_ID
            neg_ids_for_dup = negative_ids
        if all_hard_negatives:
            n_md = n_bkd.reshape(b * k, -1)
            sims.append(q_bd @ n_md.T)                         # [B, B*k]
            ok = jnp.broadcast_to(neg_present.reshape(1, b * k), (b, b * k))
            if have_ids and neg_ids_for_dup is not None:
                flat = neg_ids_for_dup.reshape(1, b * k)
                ok = ok & ~_same_id(flat, pid_b1) & ~_same_id(flat, qid_b1)
        else:
            sims.append(jnp.einsum("bd,bkd->bk", q_bd, n_bkd))  # [B, k]
            ok = neg_present
            if have_ids and neg_ids_for_dup is not None:
                ok = ok & ~_same_id(neg_ids_for_dup, pid_b1) & ~_same_id(neg_ids_for_dup, qid_b1)
        valid.append(ok)

    # Block 3: same-tower negatives q_j, j != i.
    if same_tower:
        sims.append(q_bd @ q_bd.T)                             # [B, B]
        ok = ~eye
        if have_ids:
            ok = ok & ~_same_id(query_ids[None, :], pid_b1) & ~_same_id(query_ids[None, :], qid_b1)
        valid.append(ok)

    sim = jnp.concatenate(sims, axis=1).astype(jnp.float32)
    valid_bc = jnp.concatenate(valid, axis=1)
    logits = jnp.where(valid_bc, sim / tau, MASK_VALUE)
    return sim, valid_bc, logits


def _cross_entropy_diag(logits_bc: jax.Array) -> jax.Array:
    """-log softmax(logits)[i, i] per row. logits [B, C>=B] -> [B]."""
    b = logits_bc.shape[0]
    target = logits_bc[jnp.arange(b), jnp.arange(b)]
    return jax.nn.logsumexp(logits_bc, axis=1) - target


def document_to_query_logits(
    q_bd: jax.Array,
    p_bd: jax.Array,
    *,
    tau: float,
    query_ids: jax.Array | None = None,
    positive_ids: jax.Array | None = None,
) -> jax.Array:
    """Logits [B, B] of the bidirectional term: positive p_i picks its query q_i.

    Row i: s(p_i, q_j)/tau over all queries; q_j (j != i) whose query id equals
    q_i's id or whose positive id equals p_i's id is masked (a duplicate pair).
    """
    b = q_bd.shape[0]
    logits = (p_bd @ q_bd.T).astype(jnp.float32) / tau
    if query_ids is not None and positive_ids is not None:
        dup = (_same_id(query_ids[None, :], query_ids[:, None])
               | _same_id(positive_ids[None, :], positive_ids[:, None]))
        logits = jnp.where(dup & ~jnp.eye(b, dtype=bool), MASK_VALUE, logits)
    return logits


def contrastive_loss(
    q_bd: jax.Array,
    p_bd: jax.Array,
    n_bkd: jax.Array | None = None,
    *,
    tau: float,
    same_tower: bool = True,
    all_hard_negatives: bool = False,
    bidirectional: bool = False,
    query_ids: jax.Array | None = None,
    positive_ids: jax.Array | None = None,
    negative_ids: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The Gecko loss at one embedding size (inputs unit norm).

    Args: as `gecko_logits`; `bidirectional` adds the document -> query term
    and averages the two directions (as sentence-transformers' symmetric loss).

    Returns:
      (scalar loss, metrics): accuracy (argmax is the positive), pos_sim (mean
      s(q_i, p_i)), neg_sim (mean s over valid negatives).
    """
    sim, valid, logits = gecko_logits(
        q_bd, p_bd, n_bkd, tau=tau, same_tower=same_tower,
        all_hard_negatives=all_hard_negatives, query_ids=query_ids,
        positive_ids=positive_ids, negative_ids=negative_ids)
    b = q_bd.shape[0]
    loss = jnp.mean(_cross_entropy_diag(logits))
    if bidirectional:
        d2q = document_to_query_logits(q_bd, p_bd, tau=tau, query_ids=query_ids,
                                       positive_ids=positive_ids)
        loss = 0.5 * (loss + jnp.mean(_cross_entropy_diag(d2q)))

    diag = jnp.arange(b)
    neg_valid = valid.at[diag, diag].set(False)
    metrics = {
        "accuracy": jnp.mean((jnp.argmax(logits, axis=1) == diag).astype(jnp.float32)),
        "pos_sim": jnp.mean(sim[diag, diag]),
        "neg_sim": jnp.sum(jnp.where(neg_valid, sim, 0.0)) / jnp.maximum(jnp.sum(neg_valid), 1),
    }
    return loss, metrics


def gecko_loss(
    q_bd: jax.Array,
    p_bd: jax.Array,
    n_bkd: jax.Array | None = None,
    *,
    tau: float,
    same_tower: bool = True,
    all_hard_negatives: bool = False,
    bidirectional: bool = False,
    query_ids: jax.Array | None = None,
    positive_ids: jax.Array | None = None,
    negative_ids: jax.Array | None = None,
    mrl_dims: Sequence[int] | None = None,
    mrl_weights: Sequence[float] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Gecko loss with Matryoshka: sum_m w_m * L(q[:, :d_m], p[:, :d_m], n[..., :d_m]).

    Args:
      q_bd [B, d], p_bd [B, d], n_bkd [B, k, d] or None: embeddings.
      mrl_dims: leading sizes, e.g. (384, 128, 64); None means (d,) only.
        Each truncation is renormalised to unit norm before the loss.
      mrl_weights: one weight per size (default all 1.0).
      Other args: see `contrastive_loss`.

    Returns:
      (scalar loss, metrics). Metrics are those of the first (largest listed)
      size, plus `loss/dim_{m}` for every size.
    """
    d = q_bd.shape[-1]
    dims = tuple(mrl_dims) if mrl_dims else (d,)
    weights = tuple(mrl_weights) if mrl_weights is not None else (1.0,) * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"mrl_weights {weights} and mrl_dims {dims} differ in length")
    if any(m < 1 or m > d for m in dims):
        raise ValueError(f"mrl_dims {dims} must lie in [1, {d}]")

    total = jnp.zeros((), jnp.float32)
    metrics: dict[str, jax.Array] = {}
    for m, w in zip(dims, weights):
        n_m = None if n_bkd is None else matryoshka(n_bkd, m)
        loss_m, met_m = contrastive_loss(
            matryoshka(q_bd, m), matryoshka(p_bd, m), n_m,
            tau=tau, same_tower=same_tower, all_hard_negatives=all_hard_negatives,
            bidirectional=bidirectional, query_ids=query_ids,
            positive_ids=positive_ids, negative_ids=negative_ids)
        total = total + w * loss_m
        metrics[f"loss/dim_{m}"] = loss_m
        if not any(key in metrics for key in met_m):
            metrics.update(met_m)
    metrics["loss"] = total
    return total, metrics
