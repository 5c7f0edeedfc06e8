"""Pruning counts on a small constructed memory, in pure numpy and through the CLI."""

import json
import math
import sqlite3

import numpy as np
import pytest

from vismem import Memory
from vismem.decide import VoteParams
from vismem.curate import find_suspects, prune_memory
from vismem.errors import EmptyMemoryError, InvalidInputError
from vismem.prune import PruneSettings, hard_keep, self_neighbours, self_query, soft_factors
from vismem.store import DB_NAME

# Points on the unit circle (angles in degrees). Class A near 0, class B near 90,
# and X, labelled B, sits inside A at 3 degrees: a mislabelled item.
ANGLES = [0, 2, 5, 9, 3, 90, 92, 95, 99]
LABELS = ["A", "A", "A", "A", "B", "B", "B", "B", "B"]
X = 4


def circle(angles):
    r = np.radians(angles)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def test_counts_by_hand_k1():
    # k=1 leave-one-out: A@2 -> X (wrong, X blamed), A@5 -> X (wrong, X blamed),
    # X -> A@2 (wrong against X's label B, A@2 blamed); everything else is right.
    q = self_query(circle(ANGLES), LABELS, VoteParams(k=1, vote="plurality"), count="wrong-decisions")
    expected = np.zeros(9, int)
    expected[X], expected[1] = 2, 1
    assert q.v.tolist() == expected.tolist()
    assert hard_keep(q.v, 2).tolist() == [i != X for i in range(9)]
    assert soft_factors(q.v).tolist() == pytest.approx([1.75, 0.875, 1.75, 1.75, 1.75 / 3] + [1.75] * 4)


def test_counts_by_hand_k3():
    # k=3: only X's own decision is wrong (its neighbours A@2, A@5, A@0 all say A),
    # so exactly those three are blamed once.
    q = self_query(circle(ANGLES), LABELS, VoteParams(k=3, vote="plurality"), count="wrong-decisions")
    assert q.v.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert q.predicted[X] == q.classes.index("A")


def test_disagreement_counts_by_hand():
    q = self_query(circle(ANGLES), LABELS, VoteParams(k=1, vote="plurality"))  # the default count
    assert self_query(circle(ANGLES), LABELS, VoteParams(k=1), count="disagreements").v.tolist() == q.v.tolist()
    assert q.v.tolist() == [0, 1, 0, 0, 2, 0, 0, 0, 0]  # same as wrong decisions at k=1
    q3 = self_query(circle(ANGLES), LABELS, VoteParams(k=3, vote="plurality"), count="disagreements")
    # X is among the 3 nearest of A@0, A@2, A@5 and A@9 (5, X, 2) and votes B there;
    # X's own query blames A@0, A@2, A@5
    assert q3.v.tolist() == [1, 1, 1, 0, 4, 0, 0, 0, 0]


def test_a_neighbour_whose_vote_carries_no_weight_takes_no_blame():
    """Blocked (weight 0), X took no part in the decisions of A@2 and A@5 that found it
    nearest: it is not counted against them (it was, v = 2, and hard pruning dropped it).
    X's own decision still counts against A@2, which voted in it."""
    weights = np.ones(len(ANGLES))
    weights[X] = 0.0
    for count in ("disagreements", "wrong-decisions"):
        q = self_query(circle(ANGLES), LABELS, VoteParams(k=1, vote="plurality"), weights, count=count)
        assert q.v.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0]


def test_bad_settings_fail():
    with pytest.raises(InvalidInputError):
        soft_factors(np.zeros(2), c=0)
    with pytest.raises(InvalidInputError):
        hard_keep(np.zeros(2), threshold=0)
    with pytest.raises(InvalidInputError):
        self_query(circle(ANGLES), LABELS, VoteParams(k=1, vote="prototype"))


@pytest.mark.parametrize("bad", [{"c": math.nan}, {"d": math.inf}, {"c": True}, {"threshold": 2.5},
                                 {"threshold": True}])
def test_settings_that_would_poison_every_vote_are_refused(bad):
    """The CLI's option types refuse these; the Python API must too, or they are saved."""
    with pytest.raises(InvalidInputError, match="finite c|whole number"):
        PruneSettings(mode="soft", **bad)
    with pytest.raises(InvalidInputError, match="finite c|whole number"):
        PruneSettings().replace(**bad)


def test_a_memory_saved_with_settings_older_releases_took_still_opens(small_memory, caplog):
    """0.2.0's Python API saved c=nan or threshold=2.5; such a memory opens, with the
    threshold that keeps the same items and c at its default, said in a warning."""
    path, _ = small_memory
    with Memory.open(path) as memory:
        memory.set_prune_counts({1: 2, 2: 3})
        memory.update_settings(pruning=PruneSettings(mode="hard", threshold=3))
        kept = [hit.id for hit in memory.search(circle([0.0]), 9)[0]]
    db = sqlite3.connect(path / DB_NAME)
    stored = json.loads(db.execute("SELECT value FROM config WHERE key = 'settings'").fetchone()[0])
    stored["pruning"].update(threshold=2.5, c=math.nan)
    db.execute("UPDATE config SET value = ? WHERE key = 'settings'", (json.dumps(stored),))
    db.commit()
    db.close()
    with caplog.at_level("WARNING", logger="vismem"), Memory.open(path) as memory:
        assert memory.settings.pruning == PruneSettings(mode="hard", threshold=3)
        assert [hit.id for hit in memory.search(circle([0.0]), 9)[0]] == kept and 2 not in kept and 1 in kept
    assert "soft-pruning c=nan is not a finite number" in caplog.text


@pytest.fixture
def small_memory(tmp_path):
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=2) as memory:
        ids = memory.add_vectors(circle(ANGLES), LABELS)
        memory.update_settings(vote=VoteParams(k=1, vote="plurality"))
    return path, ids


def test_prune_cli_soft_hard_off_and_purge(small_memory, cli):
    path, ids = small_memory
    result = cli("prune", path, "--mode", "soft", "--json", check=True)
    soft = json.loads(result.stdout)
    assert soft["with_wrong_votes"] == 2 and soft["excluded"] == 0
    assert "querying the memory against itself" in result.stderr and "9/9" in result.stderr  # progress
    query = circle([3.2])
    with Memory.open(path) as memory:
        d = memory.classify_vectors(query, k=1)[0]
        assert d.neighbors[0].id == ids[X] and d.neighbors[0].prune_factor == pytest.approx(1.75 / 3)
        assert any("soft-pruned" in note for note in d.interventions)
    hard = json.loads(cli("prune", path, "--mode", "hard", "--json", check=True).stdout)
    assert hard["excluded"] == 1
    with Memory.open(path) as memory:
        assert memory.classify_vectors(query, k=1)[0].label == "A"  # X no longer found
        assert len(memory) == 9  # ... but still stored
    cli("prune", path, "--mode", "off", check=True)
    with Memory.open(path) as memory:
        assert memory.classify_vectors(query, k=1)[0].label == "B"  # reversed exactly
    purged = json.loads(cli("prune", path, "--mode", "hard", "--purge", "--json", check=True).stdout)
    assert purged["purged"] == [ids[X]]
    # null when done, as remove --json and rollback --json say it (it was printed only when a purge was cut off)
    assert purged["unfinished"] is None and soft["unfinished"] is None
    with Memory.open(path) as memory:
        assert len(memory) == 8 and memory.pruning.mode == "hard"


def test_suspects_name_the_mislabelled_item_with_evidence(small_memory, cli):
    path, ids = small_memory
    result = cli("suspects", path, "--k", "3", "--json", check=True)
    assert "querying the memory against itself" in result.stderr and "9/9" in result.stderr  # progress
    lines = result.stdout.splitlines()
    first = json.loads(lines[0])
    assert first["id"] == ids[X] and first["label"] == "B" and first["suggested"] == "A"
    assert first["own_vote"] == 0.0
    assert {e["id"] for e in first["disagreeing"]} == {ids[0], ids[1], ids[2]}
    assert len(lines) == 1  # nobody else disagrees with their neighbours


def test_prune_settings_roundtrip_and_factors():
    state = PruneSettings("soft", "wrong-decisions", 1.0, 1.75, 2)
    back = PruneSettings(**json.loads(json.dumps(state.to_dict())))
    assert back == state
    assert back.factors(np.array([2, 0])) == pytest.approx([1.75 / 3, 1.75])
    assert back.replace(mode="off").factors(np.array([2])).tolist() == [1.0]
    assert back.replace(mode="hard").excluded_from == 2 and back.excluded_from is None
    with pytest.raises(InvalidInputError):
        PruneSettings(mode="medium")


def test_the_self_query_in_chunks_is_the_whole_one(monkeypatch):
    """The memory is searched against itself a chunk of rows at a time, with progress
    after each (minutes at 100k items): the answer is that of one search of all rows."""
    import faiss

    import vismem.prune

    x = np.random.default_rng(3).standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[7] = x[8]  # an exact duplicate still counts as a neighbour
    whole_sims, whole_rows = faiss.knn(x, x, 6, metric=faiss.METRIC_INNER_PRODUCT)
    monkeypatch.setattr(vismem.prune, "SELF_QUERY_CHUNK", 64)
    steps: list[int] = []
    sims, rows = self_neighbours(x, 5, steps.append)
    assert steps == [64, 64, 64, 64, 44]
    assert (rows != np.arange(300)[:, None]).all() and rows[7, 0] == 8 and rows[8, 0] == 7
    for r in range(300):
        expected = [j for j in whole_rows[r] if j != r][:5]
        assert rows[r].tolist() == expected and np.allclose(sims[r], whole_sims[r][whole_rows[r] != r][:5])


def test_hard_pruning_that_would_leave_no_voter_is_refused_and_changes_nothing(small_memory, cli, caplog):
    """With every item a neighbour of every query (k = 8 of 9), every item votes against
    some query's label: a threshold of 1 would exclude all of them (and --purge delete
    them all). Refused before anything is written: the pruning in force stays."""
    path, ids = small_memory
    cli("prune", path, "--mode", "soft", check=True)
    with Memory.open(path) as memory:
        before = memory.pruning, memory.voting_arrays()[4].tolist()
    for purge in ([], ["--purge"]):
        refused = cli("prune", path, "--mode", "hard", "--k", "8", "--threshold", "1", *purge)
        assert refused.returncode == 1
        assert "would exclude all 9 items, leaving none to vote" in refused.stderr
        assert "give a higher --threshold, or --count wrong-decisions" in refused.stderr
    with Memory.open(path) as memory:
        assert (memory.pruning, memory.voting_arrays()[4].tolist()) == before and len(memory) == 9


def test_hard_pruning_that_empties_a_label_says_so(tmp_path, caplog):
    """An item labelled C sits among the A's, nearest neighbour of queries of another
    label: v >= 1 drops it, and with it every item of label C (some A's and B's stay)."""
    from vismem.curate import prune_memory

    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        memory.add_vectors(circle([*ANGLES, 4]), [*LABELS, "C"])
        memory.update_settings(vote=VoteParams(k=1, vote="plurality"))
        with caplog.at_level("WARNING", logger="vismem"):
            report = prune_memory(memory, "hard", threshold=1)
        assert 0 < report.excluded < len(memory)
        assert "hard pruning at v >= 1 excludes every item labelled 'C': no query can get that label" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="vismem"):
            prune_memory(memory, "hard", threshold=2)  # no v reaches 2 here: nothing excluded
        assert "excludes every item" not in caplog.text


def test_hard_pruning_with_purge_refuses_to_delete_every_item_of_a_label(tmp_path, cli):
    """`prune --mode hard --purge` deleted every item labelled C and only warned after:
    a deletion is for good, so it is refused before anything is written (exit 1, the
    pruning in force and every item kept) unless --allow-empty-classes, and the labels
    emptied are named in --json `emptied`."""
    path = tmp_path / "m"
    with Memory.create(path, encoder=None, dim=2) as memory:
        ids = memory.add_vectors(circle([*ANGLES, 4]), [*LABELS, "C"])  # C sits among the A's
    before = cli("info", path, "--json", check=True).stdout
    refused = cli("prune", path, "--mode", "hard", "--purge", "--k", "1", "--threshold", "1")
    assert refused.returncode == 1
    assert ("error: hard pruning at v >= 1 with --purge would delete every item labelled 'C', so no query could "
            "get that label again; nothing was changed: give a higher --threshold, prune without --purge (undone "
            "by --mode off), or add --allow-empty-classes") in refused.stderr
    assert cli("info", path, "--json", check=True).stdout == before
    with Memory.open(path) as memory:
        assert memory.ids() == ids and memory.pruning.mode == "off"
    unused = cli("prune", path, "--mode", "hard", "--k", "1", "--threshold", "1", "--allow-empty-classes")
    assert unused.returncode == 1 and "--allow-empty-classes only applies with --purge" in unused.stderr
    done = json.loads(cli("prune", path, "--mode", "hard", "--purge", "--k", "1", "--threshold", "1",
                          "--allow-empty-classes", "--json", check=True).stdout)
    assert done["emptied"] == ["C"] and ids[-1] in done["purged"]
    with Memory.open(path) as memory:
        assert "C" not in memory.class_counts() and len(memory) == len(ids) - len(done["purged"])


def test_an_item_whose_neighbours_carry_no_weight_is_no_suspect(small_memory, cli):
    """Block the B's far from A: their neighbours (each other) cast no vote, so nothing
    speaks against their label. They were listed as suspects, 'neighbours say A' (the
    first label of an all-zero vote); only X, among the A's, is one."""
    path, ids = small_memory
    cli("block", path, *[arg for i in ids[5:] for arg in ("--id", str(i))], check=True)
    found = [json.loads(line) for line in cli("suspects", path, "--k", "3", "--json", check=True).stdout.splitlines()]
    assert [s["id"] for s in found] == [ids[X]] and found[0]["suggested"] == "A"


def test_suspects_are_judged_by_the_votes_a_classification_counts(small_memory, cli):
    """Hard pruning keeps X from voting. The self-query behind `suspects` counted it
    all the same: A@2 and A@5, whose nearest neighbour is X, were listed as suspects
    ('neighbours say B', X the evidence). Now only X is, on the word of A@2."""
    path, ids = small_memory
    cli("prune", path, "--mode", "hard", check=True)  # k=1: X's v is 2, the threshold
    found = [json.loads(line) for line in cli("suspects", path, "--k", "1", "--json", check=True).stdout.splitlines()]
    assert [s["id"] for s in found] == [ids[X]]
    assert [e["id"] for e in found[0]["disagreeing"]] == [ids[1]]


def test_suspects_search_as_a_classification_does_past_hard_pruned_items(tmp_path):
    """Item 0, labelled B, sits among A's; its nearest item (an A) is hard-pruned. A
    classification of its vector searches past the pruned item and says A. The self-query
    of `suspects` kept the pruned item in its neighbour slot with no vote, gave item 0 no
    vote at all, and missed it."""
    from vismem.curate import find_suspects

    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        ids = memory.add_vectors(circle([0, 5, 10, 12, 90, 95, 100]), ["B", "A", "A", "A", "B", "B", "B"])
        memory.set_prune_counts({ids[1]: 5})
        memory.update_settings(pruning=PruneSettings(mode="hard", threshold=2))
        found = find_suspects(memory, k=1)
        assert [(s.id, s.suggested) for s in found] == [(ids[0], "A")]
        assert [e["id"] for e in found[0].disagreeing] == [ids[2]]  # not the pruned item


def test_prune_opens_its_report_only_once_its_checks_are_passed(tmp_path):
    """`vismem prune` checked the memory itself and opened its bar before `prune_memory`
    made its own checks, so a prune refused there was refused under a drawn bar. Now
    `prune_memory` opens `report(description, total)` itself, once its checks are passed
    and the items read: a prune it refuses never calls it."""
    from contextlib import contextmanager

    from vismem.curate import prune_memory
    from vismem.errors import EmptyMemoryError

    opened, advanced = [], []

    @contextmanager
    def report(description, total):
        opened.append((description, total))
        yield advanced.append

    with Memory.create(tmp_path / "empty", encoder=None, dim=2) as memory:
        with pytest.raises(EmptyMemoryError):
            prune_memory(memory, "soft", report=report)
        assert opened == []
    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        memory.add_vectors(circle(ANGLES), LABELS)
        for mode in ("soft", "off"):  # off took --purge and said nothing of it
            with pytest.raises(InvalidInputError, match="--purge only applies to --mode hard"):
                prune_memory(memory, mode, purge=True, report=report)
        with pytest.raises(InvalidInputError):
            prune_memory(memory, "soft", c=-1.0, report=report)  # a bad setting
        assert opened == [] and memory.pruning.mode == "off"
        prune_memory(memory, "off", report=report)  # nothing to query: nothing shown
        assert opened == []
        prune_memory(memory, "soft", k=1, report=report)
        assert opened == [("querying the memory against itself", 9)] and sum(advanced) == 9
        assert memory.pruning.mode == "soft"


def test_k_zero_is_refused_not_read_as_the_memory_s_default(small_memory):
    """`prune_memory(..., k=0)` and `find_suspects(k=0)` read k=0 as "not given": they
    counted with the memory's default k, and prune saved its pruning. k=-1 was refused;
    now k=0 is too, and the memory's pruning is as it was."""
    from vismem.curate import find_suspects, prune_memory

    path, _ = small_memory
    with Memory.open(path) as memory:
        with pytest.raises(InvalidInputError, match="k must be an integer from 1"):
            prune_memory(memory, "soft", k=0)
        with pytest.raises(InvalidInputError, match="k must be an integer from 1"):
            find_suspects(memory, k=0)
        assert memory.settings.pruning.mode == "off"


def test_a_decision_no_neighbour_voted_in_is_neither_right_nor_wrong(small_memory, cli):
    """Block A@2 and, at k=1, the leave-one-out decisions of A@0 and X find only it: no
    vote, and a classification gives no label. The self-query took the first label of the
    all-zero vote, A: A@0 counted as right and X as a wrong decision (by the labels'
    alphabetical order). Now neither: 5 of 9 right (A@9 and the four B's), 2 wrong (A@2
    and A@5, whose nearest is X)."""
    path, ids = small_memory
    cli("block", path, "--id", str(ids[1]), check=True)
    report = json.loads(cli("prune", path, "--mode", "soft", "--k", "1", "--count", "wrong-decisions", "--json",
                            check=True).stdout)
    assert report["self_accuracy"] == pytest.approx(5 / 9) and report["wrong_decisions"] == 2
    # X, blamed by A@2's and A@5's wrong decisions; A@2 cast no vote in X's
    assert {row["id"]: row["v"] for row in report["top"]} == {ids[X]: 2}


def test_a_blocked_item_is_no_voter_left_by_hard_pruning(small_memory, cli):
    """Block B@99; a threshold every other item reaches was refused, as it left none to
    vote, but with the blocked item kept it was done: every classification then gave no
    label, and the warning named only A, though no query could get B either. Now it is
    refused, with the pruning in force kept."""
    path, ids = small_memory
    cli("block", path, "--id", str(ids[-1]), check=True)
    refused = cli("prune", path, "--mode", "hard", "--k", "8", "--threshold", "1")
    assert refused.returncode == 1, refused.stderr
    assert ("would exclude all 8 items that vote (the other 1 is blocked), leaving none to vote (v counts "
            "disagreements here, from 4 to 5") in refused.stderr
    with Memory.open(path) as memory:
        assert memory.pruning.mode == "off"


def test_a_label_left_with_only_blocked_items_is_named_as_emptied(tmp_path, caplog):
    """C sits among the A's and a C far away is blocked: v >= 1 drops the first C, and no
    query can get C (the other votes for nothing). It went unnamed, as a C item stayed."""
    from vismem.curate import prune_memory

    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        ids = memory.add_vectors(circle([*ANGLES, 4, 180]), [*LABELS, "C", "C"])
        memory.set_weight([ids[-1]], 0.0)
        memory.update_settings(vote=VoteParams(k=1, vote="plurality"))
        with caplog.at_level("WARNING", logger="vismem"):
            report = prune_memory(memory, "hard", threshold=1)
        assert report.emptied == ["C"] and ids[-2] in memory.ids()
        assert "excludes every item labelled 'C'" in caplog.text


def test_a_self_query_with_nothing_to_learn_is_refused(tmp_path, cli):
    """With every item blocked, suspects said every item agreed with its neighbours and
    prune scored 0%; with one item, nothing is queried against another. Both refuse now,
    changing nothing; and suspects' limit 0 listed none where it now refuses."""
    vectors = circle(ANGLES)
    with Memory.create(tmp_path / "blocked", encoder=None, dim=2) as memory:
        memory.add_vectors(vectors, LABELS)
        memory.set_weight(memory.ids(), 0)
    with Memory.create(tmp_path / "one", encoder=None, dim=2) as memory:
        memory.add_vectors(vectors[:1], LABELS[:1])
    for name, error, said in (("blocked", EmptyMemoryError, "has no items that vote"),
                              ("one", InvalidInputError, "has one item that votes")):
        with Memory.open(tmp_path / name) as memory:
            with pytest.raises(error, match=said):
                find_suspects(memory)
            with pytest.raises(error, match=said):
                prune_memory(memory, "soft")
            assert memory.pruning == PruneSettings()
        for command in (("suspects",), ("prune", "--mode", "hard")):
            result = cli(command[0], tmp_path / name, *command[1:], "--json")
            assert result.returncode == 1 and said in result.stderr and result.stdout == ""
    with Memory.open(tmp_path / "blocked") as memory:
        memory.set_weight(memory.ids(), 1)
        assert find_suspects(memory, limit=1)
        for limit in (0, -1, 1.5, True):
            with pytest.raises(InvalidInputError, match="limit must be a whole number"):
                find_suspects(memory, limit=limit)


def digits_with_flips(path, n=300, flips=5):
    """A memory of `n` digits as unit vectors, the labels of `flips` of them changed to the
    next digit (mislabelled): (vectors, true labels, ids, the positions flipped)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:n] / np.linalg.norm(digits.data[:n], axis=1, keepdims=True)).astype(np.float32)
    y = digits.target[:n].astype(str)
    flipped = np.arange(0, n, n // flips)[:flips]
    stored = y.copy()
    stored[flipped] = [str((int(t) + 1) % 10) for t in y[flipped]]
    with Memory.create(path, encoder=None, dim=64) as memory:
        ids = memory.add_vectors(x, stored)
    return x, y, ids, flipped


def found_by_search(memory, x, ids, rows) -> list[bool]:
    """Whether each item (its row of `x`) is found by a search for its own vector."""
    hits = memory.search(x[rows], 1)
    return [bool(h) and h[0].id == ids[r] for h, r in zip(hits, rows, strict=True)]


def test_relabel_undoes_the_hard_pruning_the_old_label_earned(tmp_path, cli):
    """A mislabelled item hard pruning excluded for its wrong votes stayed excluded after
    `relabel` gave it its right label: its count v measured its votes under the old label.
    A relabel resets the count (one transaction, followed by another process's memory),
    says how many it un-pruned, and a rollback puts label and count back together."""
    path = tmp_path / "m"
    x, y, ids, flipped = digits_with_flips(path)
    pruned = json.loads(cli("prune", path, "--mode", "hard", "--json", check=True).stdout)
    excluded = [int(r) for r in flipped if ids[r] in {row["id"] for row in pruned["top"]}
                and next(row["v"] for row in pruned["top"] if row["id"] == ids[r]) >= pruned["threshold"]]
    assert len(excluded) >= 3  # most flips excluded
    with Memory.open(path) as other:  # opened before the relabel: follows it
        assert not any(found_by_search(other, x, ids, excluded))
        cli("checkpoint", path, "before", check=True)
        for row in excluded:
            said = json.loads(cli("relabel", path, "--id", ids[row], "--label", y[row], "--json", check=True).stdout)
            assert said["reset_prune_counts"] == 1
        assert all(found_by_search(other, x, ids, excluded))
        assert all(other.get(ids[r]).prune_count == 0 for r in excluded)
    with Memory.open(path) as memory:
        assert all(found_by_search(memory, x, ids, excluded))
        # relabelled to the label it has, an item keeps its count: it still measures the item
        same = next(row for row in pruned["top"] if memory.get(row["id"]).prune_count)
        assert memory.relabel([same["id"]], same["label"]) == [same["id"]]
        assert memory.get(same["id"]).prune_count == same["v"]
        memory.rollback("before")
        assert not any(found_by_search(memory, x, ids, excluded))
        assert all(memory.get(ids[r]).prune_count >= pruned["threshold"] and memory.get(ids[r]).label != y[r]
                   for r in excluded)
    text = cli("relabel", path, "--id", ids[excluded[0]], "--label", y[excluded[0]], check=True).stdout
    assert "1 item un-pruned" in text
    again = json.loads(cli("relabel", path, "--id", ids[excluded[0]], "--label", y[excluded[0]], "--json",
                           check=True).stdout)
    assert again["reset_prune_counts"] == 0  # its count is 0 already


def test_prune_and_suspects_say_when_k_is_more_than_the_memory_can_give(tmp_path, cli):
    """`prune -k 1000` on 20 items: each item has 19 others to be queried against, so its
    default hard threshold k/2 = 500 was never reached and nothing was excluded, without a
    word (classify and eval warn of such a k). Both warn on stderr; --json stays JSON."""
    path = tmp_path / "m"
    digits_with_flips(path, n=20, flips=2)
    pruned = cli("prune", path, "--mode", "hard", "-k", "1000", "--json", check=True)
    assert json.loads(pruned.stdout)["excluded"] == 0
    assert "warning: k=1000, but at most 19 neighbours voted on an item" in pruned.stderr
    assert "hard threshold v >= 500 cannot be reached" in pruned.stderr
    found = cli("suspects", path, "-k", "1000", "--json", check=True)
    assert all(json.loads(line) for line in found.stdout.splitlines())
    assert "warning: k=1000, but at most 19 neighbours voted on an item" in found.stderr
    quiet = cli("prune", path, "--mode", "hard", "-k", "5", "--json", check=True)
    assert "warning: k=" not in quiet.stderr


def test_the_warning_that_a_prune_emptied_a_label_is_said_as_a_warning(tmp_path, cli):
    """The library's warnings reached stderr bare, where the CLI's own begin `warning: `."""
    with Memory.create(tmp_path / "m", encoder=None, dim=2) as memory:
        memory.add_vectors(circle([*ANGLES, 4]), [*LABELS, "C"])
        memory.update_settings(vote=VoteParams(k=1, vote="plurality"))
    said = cli("prune", tmp_path / "m", "--mode", "hard", "--threshold", "1", "--json", check=True).stderr
    line = next(line for line in said.splitlines() if "excludes every item labelled 'C'" in line)
    assert line.startswith("warning: ")
