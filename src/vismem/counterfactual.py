"""Counterfactual explanations: the fewest memory items whose removal (or blocking) would
change a decision's label, and the nearest item of the runner-up class.

Pure functions over a query's ranked candidate neighbours, fetched deeper than k: removing
a neighbour brings in the next one from further down the ranking (and, for the rank vote,
moves every later neighbour one rank up), so the candidates must reach past k by as many
items as may be removed. Blocking (weight 0) keeps the item in its slot.

How the set is found, per vote rule:

- neighbour rules (rank, softmax, distance, plurality), removal: exactly, by dynamic
  programming over the ranking. For each other class c, and for every number j of
  removals, it finds the largest achievable lead of c over the current winner, walking
  the candidates nearest first and either keeping each one (it takes the next free rank
  in the window) or removing it; state = (removals so far, which of the two classes
  appeared first, for ties): the slots filled follow from the candidates walked and the
  removals. The smallest j at which some class draws
  level (winning the tie) or leads is the minimum, over every subset of candidates.
- neighbour rules, blocking: exactly, greedily: blocking moves no one, so the winner
  loses exactly the blocked items' weights; its heaviest voters go first.
- prototype and hybrid rules: greedily, scoring every candidate's removal (its class
  prototype loses it too) and taking the one that cuts the winner's margin most, until
  the label changes. The set changes the label, but it is not proved to be the smallest:
  removing items far from the query (never candidates) can move a prototype too. A step
  estimates each candidate's margin in O(classes) from the window's running vote sums
  and re-scores exactly the few whose estimate could make the step's choice.

Ties are broken as the decision breaks them: `ties="nearest"` (the label whose nearest
voting neighbour, weight > 0, is nearer; `decide.decide`) or `ties="class-order"` (the earlier class in sorted
order; `decide.vote_matrix` and its users).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np

from .decide import NEIGHBOUR_VOTES, VoteParams, combined_scores, indexed_scores, rule_weights, tally, winner
from .errors import InvalidInputError, brief_repr

TIES = ("nearest", "class-order")
DEFAULT_MAX_REMOVALS = 50
_EPS = 1e-9  # leads this small relative to the votes summed are ties (float sums in another order)
# estimated margins within this of a greedy step's choice are scored again exactly (rounding is ~1e-15)
_CLOSE = 1e-9


@dataclass(frozen=True)
class PrototypeClusters:
    """Class prototypes as sums: `labels` (P,) owner class, `totals` float64 (P, dim) sums of
    member vectors, `counts` (P,). `member` (M,) gives each candidate's cluster row, -1 when
    it is no member (blocked or hard-pruned items shape no prototype); `vectors` (M, dim)
    the candidates' vectors and `query` (dim,) the query, as searched."""

    labels: np.ndarray
    totals: np.ndarray
    counts: np.ndarray
    member: np.ndarray
    vectors: np.ndarray
    query: np.ndarray


@dataclass(frozen=True)
class NearestItem:
    id: int
    label: str
    distance: float


@dataclass(frozen=True)
class Counterfactual:
    """What would change a decision.

    `remove`: the fewest item ids whose removal changes the label (None when no set within
    `max_removals` among the candidates does), and `label_after_remove` the label it becomes
    (None: no label). `block` and `label_after_block` likewise for blocking (weight 0).
    `exact` is True when both sets are proved smallest (neighbour rules, but for a softmax so
    sharp that farther votes underflow beside the nearest one's). `runner_up` is
    the nearest item of the best-scoring other class (or of the nearest other class when
    every neighbour agrees).
    """

    label: str | None
    remove: list[int] | None
    label_after_remove: str | None
    block: list[int] | None
    label_after_block: str | None
    runner_up: NearestItem | None
    exact: bool
    candidates: int
    max_removals: int

    __repr__ = brief_repr  # long lists shown by their ends and length

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.sentence()}

    def sentence(self) -> str:
        """'What would change this', in words."""
        if self.label is None:
            return "no label to change"
        parts = [_change("removing", self.remove, self.label_after_remove)
                 if self.remove is not None else f"no removal of up to {self.max_removals} items changes it"]
        if self.block is not None and self.block != self.remove:
            parts.append(_change("blocking", self.block, self.label_after_block))
        if self.runner_up is not None:
            parts.append(f"nearest {self.runner_up.label!r}: #{self.runner_up.id} at distance "
                         f"{self.runner_up.distance:.3f}")
        return "; ".join(parts)


def _change(verb: str, ids: list[int], after: str | None) -> str:
    items = f"{len(ids)} item{'s' if len(ids) != 1 else ''} ({', '.join(f'#{i}' for i in ids)})"
    return f"{verb} {items} would make it {after!r}" if after is not None else f"{verb} {items} would leave no label"


class _Scorer:
    """The decisions for a candidate list with some items removed or blocked, made by
    `decide.tally` as every decision is: variants of one query, voted as one batch."""

    def __init__(self, sims, labels, weights, params: VoteParams, ties: str,
                 clusters: PrototypeClusters | None) -> None:
        self.sims = np.asarray(sims, dtype=np.float64)
        self.labels = np.asarray(labels, dtype=object)
        # each candidate's label as a code into `names` (then None: code -1, an empty slot),
        # so that windows are integer arrays
        _, first, self.codes = np.unique(self.labels.astype(str), return_index=True, return_inverse=True)
        self.names = np.array([*self.labels[first].tolist(), None], dtype=object)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.params, self.ties, self.clusters = params, ties, clusters
        if clusters is not None:
            self.q = np.asarray(clusters.query, np.float64)
            totals = np.asarray(clusters.totals, np.float64)
            self.base_sims = totals @ self.q / np.maximum(np.linalg.norm(totals, axis=1), 1e-12)
            owners = np.asarray(clusters.labels)
            self.classes = sorted(set(owners.tolist()))
            # fixed for every variant: each class's prototypes, which clusters have members,
            # and which candidates belong to one
            self._of_class = [owners == c for c in self.classes]
            self._alive = np.asarray(clusters.counts) > 0
            self._in_cluster = np.asarray(clusters.member) >= 0

    def summable(self) -> bool:
        """Whether every vote keeps its value weighed against the nearest candidate's (only
        a sharp softmax's can fall below the smallest normal float)."""
        if self.params.vote != "softmax" or not len(self.sims) or not np.isfinite(self.sims[0]):
            return True
        with np.errstate(under="ignore"):
            relative = np.exp((self.sims - self.sims[0]) / self.params.tau)
        return bool((relative[np.isfinite(self.sims)] >= np.finfo(np.float64).tiny).all())

    def window(self, removed: np.ndarray) -> np.ndarray:
        return np.flatnonzero(~removed)[: self.params.k]

    def windows(self, removed: np.ndarray, blocked: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each variant's window as `tally` reads it, but with label codes (-1: empty slot):
        (T, k) similarities, codes, live and factors, for `removed` and `blocked` (T, M)
        masks over the candidates."""
        k, (t, m) = self.params.k, removed.shape
        width = min(k, m)
        # each variant's kept candidates first, in order (a stable sort of the mask)
        rows = (np.argsort(removed, axis=1, kind="stable")[:, :width] if removed.any()
                else np.broadcast_to(np.arange(width), (t, width)))
        live = np.zeros((t, k), bool)
        live[:, :width] = np.arange(width) < (m - removed.sum(axis=1))[:, None]
        sims, codes, factors = np.full((t, k), -np.inf), np.full((t, k), -1, dtype=np.int64), np.zeros((t, k))
        kept = live[:, :width]
        sims[:, :width] = np.where(kept, self.sims[rows], -np.inf)
        codes[:, :width] = np.where(kept, self.codes[rows], -1)
        if blocked.any():
            kept = kept & ~blocked[np.arange(t)[:, None], rows]
        factors[:, :width] = np.where(kept, self.weights[rows], 0.0)
        return sims, codes, live, factors

    def _prototypes(self, removed: np.ndarray, blocked: np.ndarray) -> tuple[list[str], np.ndarray | None]:
        if not self.params.uses_prototypes:
            return [], None
        return self.classes, self._class_similarities(removed | blocked)

    def tallies(self, removed: np.ndarray, blocked: np.ndarray) -> list[dict[str, float]]:
        """Label -> score in tie order (first key wins a tie) for each variant: `removed`
        and `blocked` are (T, M) masks over the candidates."""
        sims, codes, live, factors = self.windows(removed, blocked)
        _, shares = tally(sims, self.names[codes], live, factors, self.params, *self._prototypes(removed, blocked))
        return [dict(sorted(s.items())) for s in shares] if self.ties == "class-order" else shares

    def _class_similarities(self, gone: np.ndarray) -> np.ndarray:
        """(T, classes): each class's similarity to its nearest prototype once each variant's
        `gone` candidates have left their clusters; -inf for a class with no member left.
        Each variant is scored by itself, so its score never depends on the others."""
        return self._class_maxima(np.stack([self._cluster_state(row)[0] for row in gone])
                                  if len(gone) else np.empty((0, len(self._alive))))

    def _trial_class_similarities(self, gone: np.ndarray, left: np.ndarray) -> np.ndarray:
        """`_class_similarities` of a greedy step's trials (`gone` and one more of `left`
        each), to within rounding: a trial changes the one cluster its extra leaver leaves."""
        now, totals, _, counts = self._cluster_state(gone)
        sims = np.repeat(now[None], len(left), axis=0)
        trial = np.flatnonzero(self._in_cluster[left])
        row = left[trial]
        p = self.clusters.member[row]  # type: ignore[union-attr]  # (set with prototypes)
        rest = totals[p] - self.clusters.vectors[row].astype(np.float64)  # type: ignore[union-attr]
        sims[trial, p] = np.where(counts[p] > 1,
                                  rest @ self.q / np.maximum(np.linalg.norm(rest, axis=1), 1e-12), -np.inf)
        return self._class_maxima(sims)

    def _cluster_state(self, gone: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(similarity to the query (P,), -inf where no member is left; totals (P, dim);
        alive; member counts) of the clusters once the `gone` candidates that are members
        have left them."""
        cl = self.clusters
        assert cl is not None
        sims, totals, counts = self.base_sims.copy(), np.asarray(cl.totals, np.float64).copy(), \
            np.asarray(cl.counts).copy()
        rows = np.flatnonzero(gone & self._in_cluster)
        for p in np.unique(cl.member[rows]):
            mine = rows[cl.member[rows] == p]
            totals[p] = cl.totals[p] - cl.vectors[mine].sum(axis=0, dtype=np.float64)
            counts[p] -= len(mine)
            sims[p] = totals[p] @ self.q / max(float(np.linalg.norm(totals[p])), 1e-12)
        alive = self._alive & (counts > 0)
        sims[~alive] = -np.inf
        return sims, totals, alive, counts

    def _class_maxima(self, cluster_sims: np.ndarray) -> np.ndarray:
        """(T, classes) from (T, P): each class's best prototype (no class: a restriction
        that no item matches)."""
        if not self._of_class:
            return np.empty((len(cluster_sims), 0))
        return np.stack([cluster_sims[:, of_class].max(axis=1) for of_class in self._of_class], axis=1)

    def trial_margins(self, gone: np.ndarray, left: np.ndarray, how: str, label: str) -> np.ndarray:
        """`margins` of a greedy step's trials: `gone` (M,) taken away ("remove" or "block")
        and one more of `left` each, exact wherever the step's choice depends on it.

        For the votes with prototypes (whose neighbours vote by rank), each trial's
        neighbour votes follow from the current window's in O(classes): removing slot s
        moves every later neighbour a rank up and the next candidate into the last slot;
        blocking it takes its vote away. The estimates differ from `tally`'s sums by
        rounding only, so the trials that could be the step's smallest, or a tie that the
        tie order settles, are scored again exactly."""
        if not self.params.uses_prototypes:
            return self.margins(*self._trials(gone, left, how), label)
        estimate = self._estimated_margins(gone, left, how, label)
        clear = estimate < -_CLOSE  # lost (-inf), beyond any rounding
        # the trials that may be the smallest, or a tie that the tie order may settle as lost
        bound = _CLOSE if clear.all() else max(float(estimate[~clear].min()), 0.0) + _CLOSE
        close = np.flatnonzero(~clear & (estimate <= bound))
        if clear.any():  # the step's smallest is -inf: only a lost trial before the first clear one counts
            close = close[close < np.argmax(clear)]
        out = np.where(clear, -np.inf, estimate)
        if len(close):
            out[close] = self.margins(*self._trials(gone, left[close], how), label)
        return out

    @staticmethod
    def _trials(gone: np.ndarray, extra: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
        """(removed, blocked) masks of the trials that each take `gone` and one more of
        `extra` away, by `how` ("remove" or "block")."""
        trials = np.repeat(gone[None], len(extra), axis=0)
        trials[np.arange(len(extra)), extra] = True
        untouched = np.zeros_like(trials)
        return (trials, untouched) if how == "remove" else (untouched, trials)

    def _estimated_margins(self, gone: np.ndarray, left: np.ndarray, how: str, label: str) -> np.ndarray:
        """Each trial's margin to within rounding, from running sums over the current window
        (-inf where nothing votes); `trial_margins` says which to score again exactly."""
        k, n_names = self.params.k, len(self.names) - 1
        removed = gone if how == "remove" else np.zeros_like(gone)
        kept = np.flatnonzero(~removed)
        window, after = kept[:k], kept[k:k + 1]
        # the votes with prototypes weigh their neighbours by rank: by slot alone
        rank = rule_weights(np.zeros(k), self.params)
        factor = np.where(gone[window], 0.0, self.weights[window]) if how == "block" else self.weights[window]
        votes = np.zeros((len(window) + 1, n_names))  # votes[s]: the window's first s slots summed by class
        np.cumsum(self._one_hot(window, rank[: len(window)] * factor), axis=0, out=votes[1:])
        moved = np.zeros_like(votes)  # the same, but each slot a rank up (slot 0 leaves)
        np.cumsum(self._one_hot(window[1:], rank[: len(window) - 1] * factor[1:]), axis=0, out=moved[2:])
        slot = np.full(len(self.sims), -1)
        slot[window] = np.arange(len(window))
        s = slot[left]
        sums = np.repeat(votes[-1][None], len(left), axis=0)  # a trial outside the window: as now
        inside = s >= 0
        if self.params.vote == "prototype":
            sums[:] = 0.0
        elif how == "remove":
            sums[inside] = votes[s[inside]] + moved[-1] - moved[s[inside] + 1]
            if len(after) and len(window) == k:  # the next candidate takes the last slot
                sums[inside, self.codes[after[0]]] += rank[k - 1] * self.weights[after[0]]
        else:
            sums[inside, self.codes[left[inside]]] -= rank[s[inside]] * factor[s[inside]]
        classes = sorted({*self.names[:-1].tolist(), *self.classes})
        columns = [classes.index(c) for c in self.names[:-1].tolist()]
        neighbours = np.zeros((len(left), len(classes)))
        neighbours[:, columns] = sums
        proto = np.full((len(left), len(classes)), -np.inf)
        proto[:, [classes.index(c) for c in self.classes]] = self._trial_class_similarities(gone, left)
        scores = combined_scores(neighbours, self.params, proto)
        at = classes.index(label)
        lead = scores[:, at] - np.delete(scores, at, axis=1).max(axis=1, initial=0.0)
        return np.where((scores > 0).any(axis=1), lead, -np.inf)

    def _one_hot(self, rows: np.ndarray, votes: np.ndarray) -> np.ndarray:
        """(len(rows), label codes): each row's vote in its label's column."""
        out = np.zeros((len(rows), len(self.names) - 1))
        out[np.arange(len(rows)), self.codes[rows]] = votes
        return out

    def winner(self, removed: np.ndarray, blocked: np.ndarray) -> tuple[str | None, dict[str, float]]:
        totals = self.tallies(removed[None], blocked[None])[0]
        return winner(totals), totals

    def margins(self, removed: np.ndarray, blocked: np.ndarray, label: str) -> np.ndarray:
        """How far `label` leads the best other class in each variant (> 0: it still wins;
        -inf: it lost, a tie included when the other class comes first in tie order).
        Read off the score matrix; only exact ties are settled by `tallies`' tie order."""
        sims, codes, live, factors = self.windows(removed, blocked)
        proto_classes, proto_sims = self._prototypes(removed, blocked)
        # the classes and label indices `tally` would make of the labels, from codes
        present = np.flatnonzero(np.bincount(codes[live], minlength=len(self.names) - 1))
        classes = sorted({*self.names[present].tolist(), *proto_classes})
        index_of = np.full(len(self.names), -1)
        index_of[present] = [classes.index(c) for c in self.names[present].tolist()]
        _, scores = indexed_scores(sims, index_of[codes], classes, factors, self.params, proto_classes, proto_sims)
        if label in classes:
            at = classes.index(label)
            mine, others = scores[:, at], np.delete(scores, at, axis=1).max(axis=1, initial=0.0)
        else:
            mine, others = np.zeros(len(scores)), scores.max(axis=1, initial=0.0)
        voted = (scores > 0).any(axis=1)
        out = np.where(voted & (mine > others), mine - others, -np.inf)
        tied = np.flatnonzero(voted & (mine == others))
        if len(tied):
            for i, totals in zip(tied.tolist(), self.tallies(removed[tied], blocked[tied]), strict=True):
                out[i] = 0.0 if winner(totals) == label else -np.inf
        return out


def counterfactual(
    similarities: np.ndarray,
    ids: Sequence[int] | np.ndarray,
    labels: Sequence[Any],
    weights: np.ndarray,
    params: VoteParams,
    *,
    exhaustive: bool = False,
    ties: str = "nearest",
    max_removals: int = DEFAULT_MAX_REMOVALS,
    prototypes: PrototypeClusters | None = None,
) -> Counterfactual:
    """What would change the decision of one query.

    `similarities` (M,) of its candidate neighbours best first, with their `ids`, `labels`
    and vote `weights` (item weight x prune factor), M >= k + max_removals unless the list
    holds every item the query can reach (`exhaustive`). Prototype and hybrid votes need
    `prototypes`.
    """
    if ties not in TIES:
        raise InvalidInputError(f"unknown tie rule {ties!r}; choose from {', '.join(TIES)}")
    if max_removals < 0:
        raise InvalidInputError(f"max_removals must be >= 0, got {max_removals}")
    if params.uses_prototypes and prototypes is None:
        raise InvalidInputError(f"vote {params.vote} needs the class prototypes for a counterfactual")
    id_of = np.asarray(ids, dtype=np.int64)
    m = len(id_of)
    scorer = _Scorer(similarities, labels, weights, params, ties, prototypes)
    none = np.zeros(m, dtype=bool)
    label, totals = scorer.winner(none, none)
    runner_up = _runner_up(scorer, id_of, totals, label)
    reach = m if exhaustive else max(0, m - params.k)  # removals the candidate list can absorb
    budget = min(max_removals, reach)
    if label is None:
        return Counterfactual(None, None, None, None, None, runner_up, True, m, budget)
    if params.vote in NEIGHBOUR_VOTES:
        # the programme sums votes weighed against the nearest item; one of a sharp softmax
        # below the smallest normal float (tau 0.001, 0.75 farther) has lost its value there,
        # so the removals are then found greedily, each variant voted as the decision votes
        exact = scorer.summable()
        removed = _fewest_removals(scorer, label, exhaustive, budget) if exact \
            else _greedy(scorer, label, "remove", budget)
        blocked = _fewest_blocks(scorer, label)
    else:
        removed = _greedy(scorer, label, "remove", budget)
        blocked = _greedy(scorer, label, "block", min(max_removals, m))
        exact = False
    after_remove = after_block = None
    if removed is not None:
        mask = np.zeros(m, dtype=bool)
        mask[removed] = True
        after_remove = scorer.winner(mask, none)[0]
        assert after_remove != label, "counterfactual removal did not change the label"
    if blocked is not None:
        mask = np.zeros(m, dtype=bool)
        mask[blocked] = True
        after_block = scorer.winner(none, mask)[0]
        assert after_block != label, "counterfactual blocking did not change the label"
    return Counterfactual(
        label,
        None if removed is None else id_of[removed].tolist(), after_remove,
        None if blocked is None else id_of[blocked].tolist(), after_block,
        runner_up, exact, m, budget,
    )


def _runner_up(scorer: _Scorer, ids: np.ndarray, totals: dict[str, float], label: str | None) -> NearestItem | None:
    ranked = sorted((c for c in totals if c != label and totals[c] > 0), key=lambda c: -totals[c])
    target = ranked[0] if ranked else next((c for c in scorer.labels if c != label), None)
    if target is None:
        return None
    r = int(np.flatnonzero(scorer.labels == target)[0]) if (scorer.labels == target).any() else None
    if r is None:
        return None
    return NearestItem(int(ids[r]), str(target), float(1.0 - scorer.sims[r]))


def _fewest_blocks(scorer: _Scorer, label: str) -> list[int] | None:
    """Block the winner's heaviest voters in the window until it stops winning (exact:
    blocking moves no other vote, so the winner loses exactly the blocked weights)."""
    none = np.zeros(len(scorer.sims), dtype=bool)
    rows = scorer.window(none)
    voters = rows[scorer.labels[rows] == label]
    w = rule_weights(scorer.sims[rows], scorer.params) * scorer.weights[rows]
    weight_of = dict(zip(rows.tolist(), w.tolist(), strict=False))
    order = sorted(voters.tolist(), key=lambda r: (-weight_of[r], r))
    blocked = none.copy()
    for n, r in enumerate(order):
        blocked[r] = True
        if scorer.winner(none, blocked)[0] != label:
            return sorted(order[: n + 1])
    return None


def _greedy(scorer: _Scorer, label: str, how: str, budget: int) -> list[int] | None:
    """Prototype and hybrid votes: take away, one at a time, the candidate whose loss cuts
    the winner's margin most, until the label changes (a set that works, maybe not the fewest)."""
    gone = np.zeros(len(scorer.sims), dtype=bool)
    chosen: list[int] = []
    for _ in range(budget):
        left = np.flatnonzero(~gone)
        if not len(left):
            return None
        margins = scorer.trial_margins(gone, left, how, label)
        best = int(left[np.argmin(margins)])  # the first of the smallest: the nearest
        gone[best] = True
        chosen.append(best)
        if margins.min() == -np.inf:
            return sorted(chosen)
    return None


def _fewest_removals(scorer: _Scorer, label: str, exhaustive: bool, budget: int) -> list[int] | None:
    """Smallest set of candidates whose removal changes the label, for the neighbour rules.

    Dynamic programming over the ranking, one other class c at a time (see the module doc);
    the best over all c is the answer.
    """
    labels = scorer.labels
    # None stands for "the winner keeps no weight in the window": then another class wins,
    # or no label is left
    targets = [None, *(c for c in dict.fromkeys(labels.tolist()) if c != label)]
    best: list[int] | None = None
    for c in targets:
        limit = budget if best is None else len(best) - 1
        if limit < 0:
            break
        found = _removals_for(scorer, label, c, exhaustive, limit)
        if found is not None and (best is None or len(found) < len(best)):
            best = found
    return best


def _removals_for(scorer: _Scorer, winner: str, target: str | None, exhaustive: bool,
                  budget: int) -> list[int] | None:
    """Fewest removals (<= budget) after which `target` outscores `winner`, or `winner`
    leaves the window; None if none.

    V[j, f] = best lead of target over winner with j removals, f = 0 (neither class seen
    yet) / 1 (target seen first) / 2 (winner seen first). The window slots filled need no
    index of their own: each candidate is removed, takes the next slot or falls past a full
    window, so after i candidates with j removed, min(i - j, k) slots are filled, and
    candidate i takes slot i - j. (As a third index, the slots made k = 1000 take seconds.)
    """
    p = scorer.params
    k, m = p.k, len(scorer.sims)
    sims, labels, weights = scorer.sims, scorer.labels, scorer.weights
    if p.vote == "rank":
        rank_weight = 1.0 / (p.alpha + np.arange(k))
        item_base = np.ones(m)
    else:
        rank_weight = np.ones(k)
        # rank-free rules: a neighbour's weight does not depend on its slot; softmax's shared
        # normaliser does not change which class leads, so exp((s - s_nearest)/tau) is enough
        top = float(sims[0]) if m and np.isfinite(sims[0]) else 0.0
        item_base = rule_weights(sims, p) if p.vote != "softmax" else np.exp((sims - top) / p.tau)
    sign = np.where(labels == target, 1.0, np.where(labels == winner, -1.0, 0.0))
    # which class comes first in tie order: a neighbour that casts no vote breaks no tie
    seen = np.where(weights > 0, np.where(labels == target, 1, np.where(labels == winner, 2, 0)), 0)
    later = scorer.ties == "class-order" and target is not None and target > winner
    neg = -np.inf
    removals = np.arange(budget + 1)
    value = np.full((budget + 1, 3), neg)
    value[0, 0] = 0.0
    # choice[i][j, f]: 0 removed, 1 kept with f unchanged, 2 kept and first of the pair, 3 past the window
    choices = np.zeros((m, budget + 1, 3), dtype=np.int8)
    # on equal leads keeping wins, so the removals chosen are the nearest ones that work
    for i in range(m):
        new = np.full_like(value, neg)
        choice = choices[i]
        # remove item i
        new[1:] = value[:-1]
        choice[1:] = 0
        # keep it in the next free slot, i - j (< k; j > i is unreachable)
        slot = i - removals
        free = (slot >= 0) & (slot < k)
        gain = np.zeros(budget + 1)
        gain[free] = (sign[i] * weights[i] * item_base[i]) * rank_weight[slot[free]]
        kept = value + gain[:, None]
        if seen[i]:
            # f = 0 -> seen[i]; f = 1, 2 unchanged
            better = free & (kept[:, 0] >= new[:, seen[i]])
            new[better, seen[i]] = kept[better, 0]
            choice[better, seen[i]] = 2
            for f in (1, 2):
                better = free & (kept[:, f] >= new[:, f])
                new[better, f] = kept[better, f]
                choice[better, f] = 1
        else:
            better = free[:, None] & (kept >= new)
            new[better] = kept[better]
            choice[better] = 1
        # the window is full: later items change nothing
        better = (slot >= k)[:, None] & (value >= new)
        new[better] = value[better]
        choice[better] = 3
        value = new
    # A lead within _EPS of the votes it sums is a tie. Most leads are clear against the
    # largest votes the pair could sum; only the others are traced for their own sum (a
    # sharp softmax casts votes near e^-30 below the nearest item, where a fixed tolerance
    # took every lead for a tie).
    pair_gains = np.abs(sign * weights * item_base)[:, None] * rank_weight[None, :]  # (m, k) by slot
    clear = _EPS * float(pair_gains.max(axis=1).sum())
    for j in range(budget + 1):  # budget <= m: counterfactual() bounds it by the candidates
        if not exhaustive and m - j < k:
            continue  # the window would reach past the candidates fetched
        for f in (0, 1, 2):
            v = value[j, f]
            if v == neg:
                continue
            if target is None:
                flips = v >= 0  # minus the winner's weight: zero when it has none left
            else:
                tie = _EPS * _path_mass(choices, pair_gains, j, f) if abs(v) <= clear else clear
                flips = f == 0 or v > tie or (v >= -tie and (f == 1 if scorer.ties == "nearest" else not later))
            if flips:
                return _trace(choices, j, f)
    return None


def _path_mass(choices: np.ndarray, pair_gains: np.ndarray, j: int, f: int) -> float:
    """The sum of the pair's |votes| kept on the path the dynamic programme chose (as `_trace` walks it)."""
    mass = 0.0
    for i in range(len(choices) - 1, -1, -1):
        c = choices[i, j, f]
        if c == 0:
            j -= 1
        elif c in (1, 2):
            mass += float(pair_gains[i, i - j])  # the slot it took
            if c == 2:
                f = 0
    return mass


def _trace(choices: np.ndarray, j: int, f: int) -> list[int]:
    """The removed candidates on the path the dynamic programme chose."""
    removed = []
    for i in range(len(choices) - 1, -1, -1):
        c = choices[i, j, f]
        if c == 0:
            removed.append(i)
            j -= 1
        elif c == 2:
            f = 0
    return sorted(removed)


def with_abstention(cf: Counterfactual, similarities: np.ndarray, ids: Sequence[int] | np.ndarray,
                    votes: np.ndarray, *, k: int, threshold: float, prototype_weight: float, abstained: bool,
                    exhaustive: bool, prototypes: PrototypeClusters | None = None) -> Counterfactual:
    """`cf`, found on the vote alone, made true of a decision with abstention: one abstained
    on has no label to change; otherwise each set's outcome is scored again (the query is
    abstained on, label None, once its distance to its k-th nearest voting candidate, plus
    `prototype_weight` x the one to its nearest prototype, passes `threshold`), and a
    smaller set that makes it abstain replaces the vote's. `similarities`, `ids` and
    `votes` (M,; bool, weight > 0) are the candidates `cf` was found on, nearest first,
    `exhaustive` as there; `prototypes` as for `counterfactual`, needed when
    `prototype_weight` > 0.

    A removed or blocked item leaves the score alike: it is no voting neighbour, and shapes
    no prototype. With `prototype_weight` 0, the smallest set that makes the query abstain
    is its nearest voting candidates within the threshold but k - 1, so the sets stay
    exact; a prototype in the score moves as items leave it, and then `exact` is false."""
    if abstained:
        return replace(cf, label=None, remove=None, label_after_remove=None, block=None, label_after_block=None)
    if cf.label is None:
        return cf
    score = _OodScore(similarities, votes, k, threshold, prototype_weight, exhaustive, prototypes)
    id_of = np.asarray(ids, dtype=np.int64)
    exact = cf.exact and score.scorer is None
    found: dict[str, tuple[list[int] | None, str | None]] = {}
    for kind, chosen, after in (("remove", cf.remove, cf.label_after_remove),
                                ("block", cf.block, cf.label_after_block)):
        if chosen is not None:
            gone = np.isin(id_of, chosen)
            exact = exact and score.known(gone)
            after = None if score.abstains(gone) else after
        fewest = score.fewest(cf.max_removals)
        if fewest is not None and (chosen is None or int(fewest.sum()) < len(chosen)):
            if score.known(fewest) and score.abstains(fewest):
                chosen, after = id_of[fewest].tolist(), None
            else:
                exact = False
        found[kind] = (chosen, after)
    return replace(cf, remove=found["remove"][0], label_after_remove=found["remove"][1], block=found["block"][0],
                   label_after_block=found["block"][1], exact=exact)


class _OodScore:
    """A query's out-of-distribution score as `classify` computes it, with some of its
    candidates gone (removed or blocked: either way no voting neighbour, no prototype member)."""

    def __init__(self, similarities: np.ndarray, votes: np.ndarray, k: int, threshold: float,
                 prototype_weight: float, exhaustive: bool, prototypes: PrototypeClusters | None) -> None:
        self.sims, self.votes = np.asarray(similarities, dtype=np.float64), np.asarray(votes, dtype=bool)
        self.k, self.threshold, self.weight, self.exhaustive = k, threshold, prototype_weight, exhaustive
        self.scorer = None
        if prototype_weight > 0:
            if prototypes is None:
                raise InvalidInputError("a score with a prototype weight needs the class prototypes")
            self.scorer = _Scorer(self.sims, [""] * len(self.sims), self.votes.astype(np.float64),
                                  VoteParams(k=max(1, k)), "nearest", prototypes)

    def known(self, gone: np.ndarray) -> bool:
        """Whether the k-th voting neighbour left is among the candidates."""
        return self.exhaustive or int((self.votes & ~gone).sum()) >= self.k

    def abstains(self, gone: np.ndarray) -> bool:
        counted = np.flatnonzero(self.votes & ~gone)
        score = 2.0 if not len(counted) else 1.0 - self.sims[counted[min(self.k, len(counted)) - 1]]
        if self.scorer is not None:
            best = self.scorer._class_similarities(gone[None])[0].max(initial=-np.inf)
            score += self.weight * (1.0 - best if np.isfinite(best) else 2.0)
        return bool(score > self.threshold)

    def fewest(self, budget: int) -> np.ndarray | None:
        """With no prototype in the score, the smallest set that makes the query abstain (a
        mask): its nearest voting candidates within the threshold but k - 1. None if it is
        empty, over `budget`, or the score has a prototype (which moves as items leave)."""
        within = np.flatnonzero(self.votes & (1.0 - self.sims <= self.threshold))
        count = len(within) - self.k + 1
        if self.scorer is not None or not 1 <= count <= budget:
            return None
        gone = np.zeros(len(self.sims), dtype=bool)
        gone[within[:count]] = True
        return gone
