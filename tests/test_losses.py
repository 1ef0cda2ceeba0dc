"""The Gecko loss against a plain numpy loop (tolerance 1e-5), label layout, MRL."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax import losses

TAU = 0.05


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _rand(rng, b, k, d):
    q = _unit(rng.normal(size=(b, d)))
    p = _unit(rng.normal(size=(b, d)))
    n = _unit(rng.normal(size=(b, k, d))) if k else None
    return q, p, n


def _ids(rng, b, k):
    """Ids with deliberate duplicates so the masks do something."""
    qid = rng.integers(0, 4, size=b) * 10          # repeated queries
    pid = rng.integers(0, 5, size=b) * 10 + 1       # repeated positives
    pid[0] = qid[1]                                 # a positive equal to another row's query
    nid = rng.integers(0, 5, size=(b, k)) * 10 + 1 if k else np.zeros((b, 0), int)
    if k:
        nid[1, 0] = losses.NO_ID                    # a missing hard negative
        nid[2, -1] = pid[2]                         # own hard negative = own positive
    return qid, pid, nid


def numpy_loss(q, p, n, tau, same_tower, all_hard, bidirectional, ids=None):
    """Row-by-row reference: list every allowed negative explicitly."""
    b = q.shape[0]
    k = 0 if n is None else n.shape[1]

    def dup(item_id, i):
        if ids is None or item_id == losses.NO_ID:
            return False
        qid, pid, _ = ids
        return item_id == pid[i] or item_id == qid[i]

    total, correct = 0.0, 0
    for i in range(b):
        pos = q[i] @ p[i] / tau
        others = []
        for j in range(b):
            same_query = ids is not None and ids[0][j] == ids[0][i]
            if j != i and not dup(ids[1][j] if ids else None, i) and not same_query:
                others.append(q[i] @ p[j] / tau)
        rows = range(b) if all_hard else [i]
        for j in rows:
            for m in range(k):
                nid = ids[2][j, m] if ids else None
                if nid == losses.NO_ID or dup(nid, i):
                    continue
                others.append(q[i] @ n[j, m] / tau)
        if same_tower:
            for j in range(b):
                if j != i and not dup(ids[0][j] if ids else None, i):
                    others.append(q[i] @ q[j] / tau)
        allv = np.array([pos] + others)
        total += np.log(np.sum(np.exp(allv - allv.max()))) + allv.max() - pos
        correct += int(pos > max(others, default=-np.inf))
    loss = total / b
    if bidirectional:
        back = 0.0
        for i in range(b):
            vals = [p[i] @ q[i] / tau]
            for j in range(b):
                if j == i:
                    continue
                if ids is not None and (ids[0][j] == ids[0][i] or ids[1][j] == ids[1][i]):
                    continue
                vals.append(p[i] @ q[j] / tau)
            vals = np.array(vals)
            back += np.log(np.sum(np.exp(vals - vals.max()))) + vals.max() - vals[0]
        loss = 0.5 * (loss + back / b)
    return loss, correct / b


CASES = list(itertools.product([0, 1, 3], [True, False], [False, True], [False, True]))


@pytest.mark.parametrize("k,same_tower,with_ids,all_hard", CASES)
def test_matches_numpy(k, same_tower, with_ids, all_hard):
    rng = np.random.default_rng(k * 7 + same_tower * 3 + with_ids)
    b, d = 6, 16
    q, p, n = _rand(rng, b, k, d)
    ids = _ids(rng, b, k) if with_ids else None
    for bidir in (False, True):
        want, acc = numpy_loss(q, p, n, TAU, same_tower, all_hard, bidir, ids)
        kw = {}
        if ids:
            kw = dict(query_ids=jnp.asarray(ids[0]), positive_ids=jnp.asarray(ids[1]),
                      negative_ids=jnp.asarray(ids[2]) if k else None)
        got, met = losses.gecko_loss(
            jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
            None if n is None else jnp.asarray(n, jnp.float32), tau=TAU,
            same_tower=same_tower, all_hard_negatives=all_hard, bidirectional=bidir, **kw)
        np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)
        assert float(met["accuracy"]) == pytest.approx(acc)
        assert float(met["pos_sim"]) == pytest.approx(np.mean(np.sum(q * p, -1)), abs=1e-5)


def test_matryoshka_matches_numpy():
    rng = np.random.default_rng(0)
    b, k, d = 5, 2, 24
    q, p, n = _rand(rng, b, k, d)
    dims, weights = (24, 8, 4), (1.0, 0.5, 0.25)
    want = 0.0
    for m, w in zip(dims, weights):
        lm, _ = numpy_loss(_unit(q[:, :m]), _unit(p[:, :m]), _unit(n[..., :m]),
                           TAU, True, False, False)
        want += w * lm
    got, met = losses.gecko_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n), tau=TAU,
                                 mrl_dims=dims, mrl_weights=weights)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)
    assert set(met) >= {"loss/dim_24", "loss/dim_8", "loss/dim_4", "accuracy", "neg_sim"}
    with pytest.raises(ValueError):
        losses.gecko_loss(jnp.asarray(q), jnp.asarray(p), tau=TAU, mrl_dims=(32,))


def test_label_layout_hard_negatives_never_target():
    """k=3: a row whose hard negatives equal its query must score as a MISS.

    If the target index pointed into the hard-negative block (an easy layout mistake),
    a query identical to its hard negatives would look perfectly classified.
    """
    b, k, d = 4, 3, 8
    eye = np.eye(d)
    q = eye[:b]
    p = eye[b:2 * b]                              # positives orthogonal to queries
    n = np.repeat(q[:, None, :], k, axis=1)       # hard negatives == query
    loss, met = losses.gecko_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                  tau=TAU, same_tower=False)
    assert float(met["accuracy"]) == 0.0
    assert float(loss) > 10.0                    # log(k)+1/tau for a miss by 1/tau

    # And when positives match the queries, every row is a hit with tiny loss.
    n2 = np.repeat(p[:, None, :], k, axis=1)      # negatives orthogonal to queries
    loss2, met2 = losses.gecko_loss(jnp.asarray(q), jnp.asarray(q), jnp.asarray(n2),
                                    tau=TAU, same_tower=False)
    assert float(met2["accuracy"]) == 1.0
    assert float(loss2) < 1e-3

    # Gradient check: the loss pulls q_i toward p_i, away from its negatives.
    rng = np.random.default_rng(1)
    q3, p3, n3 = (jnp.asarray(x) for x in _rand(rng, b, k, d))
    g = jax.grad(lambda qq: losses.gecko_loss(qq, p3, n3, tau=TAU)[0])(q3)
    assert float(jnp.sum(-g * p3)) > 0          # descent direction raises s(q_i, p_i)

    # The logit columns: positives first, then the own row's k negatives.
    _, valid, logits = losses.gecko_logits(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                           tau=TAU, same_tower=True)
    assert logits.shape == (b, b + k + b)
    np.testing.assert_allclose(np.asarray(logits[:, b:b + k]), 1.0 / TAU, rtol=1e-6)
    assert not bool(valid[0, b + k])             # q_0 is not its own negative


def test_duplicate_positive_is_not_a_negative():
    """Two rows sharing one positive text: neither's copy counts against the other."""
    rng = np.random.default_rng(3)
    q, p, _ = _rand(rng, 4, 0, 8)
    p[1] = p[0]
    ids = dict(query_ids=jnp.array([0, 1, 2, 3]), positive_ids=jnp.array([10, 10, 12, 13]))
    _, valid, _ = losses.gecko_logits(jnp.asarray(q), jnp.asarray(p), None, tau=TAU,
                                      same_tower=False, **ids)
    assert bool(valid[0, 0]) and bool(valid[1, 1])          # own positives kept
    assert not bool(valid[0, 1]) and not bool(valid[1, 0])  # duplicate masked
    assert bool(valid[0, 2])


def test_rows_sharing_a_query_are_not_each_others_negatives():
    """Two positives of one query (rows 0 and 1): neither is the other's negative;
    a third row's positive and both rows' hard negatives still are."""
    rng = np.random.default_rng(5)
    q, p, n = _rand(rng, 3, 1, 8)
    q[1] = q[0]
    ids = dict(query_ids=jnp.array([7, 7, 8]), positive_ids=jnp.array([10, 11, 12]),
               negative_ids=jnp.array([[20], [21], [22]]))
    _, valid, _ = losses.gecko_logits(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n), tau=TAU,
                                      same_tower=True, all_hard_negatives=True, **ids)
    valid = np.asarray(valid)
    assert valid[0, 0] and valid[1, 1]                      # own positives kept
    assert not valid[0, 1] and not valid[1, 0]              # the other positive of q: masked
    assert valid[0, 2] and valid[2, 0] and valid[2, 1]      # other queries' positives stay
    assert valid[0, 3:6].all() and valid[1, 3:6].all()      # hard negatives (all rows) stay
    assert not valid[0, 6 + 1] and not valid[1, 6 + 0]      # same-tower copy of the query
    np_ids = (np.array([7, 7, 8]), np.array([10, 11, 12]), np.array([[20], [21], [22]]))
    want, _ = numpy_loss(q, p, n, TAU, True, True, False, np_ids)
    got, _ = losses.gecko_loss(jnp.asarray(q, jnp.float32), jnp.asarray(p, jnp.float32),
                               jnp.asarray(n, jnp.float32), tau=TAU, same_tower=True,
                               all_hard_negatives=True, **ids)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)
