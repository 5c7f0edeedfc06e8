"""Abstention: the calibrated threshold answers the target share of unseen in-distribution queries."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from vismem import Memory
from vismem.calibrate import auroc, calibrate_threshold, fpr_at_tpr, true_positive_rate
from vismem.errors import InvalidInputError


def test_threshold_arithmetic():
    scores = np.arange(1, 101, dtype=float)  # 1..100
    assert calibrate_threshold(scores, 0.95) == 95.0
    assert true_positive_rate(scores, 95.0) == 0.95
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert fpr_at_tpr(scores, np.array([50.0, 99.0]), 0.95) == 0.5
    with pytest.raises(InvalidInputError):
        calibrate_threshold(scores, 0)


@pytest.mark.parametrize("tpr", [0.95, 0.8])
def test_calibration_reaches_target_tpr_on_held_out_data(tmp_path, tpr):
    digits = load_digits()
    x, y = digits.data.astype(np.float32), digits.target.astype(str)
    known = y != "9"  # class 9 never enters memory: it is the out-of-distribution class
    rows = np.random.default_rng(0).permutation(np.flatnonzero(known))
    memory_rows, query_rows = rows[:1000], rows[1000:]
    with Memory.create(tmp_path / "m", encoder=None, dim=64) as memory:
        memory.add_vectors(x[memory_rows], y[memory_rows])
        from vismem.curate import calibrate_memory

        calibration = calibrate_memory(memory, tpr=tpr)
        assert calibration.achieved_tpr >= tpr
        answered = [not d.abstained for d in memory.classify_vectors(x[query_rows], abstain=True)]
        assert np.mean(answered) == pytest.approx(tpr, abs=0.04)
        unknown = memory.classify_vectors(x[y == "9"], abstain=True)
        assert np.mean([d.abstained for d in unknown]) > 1 - np.mean(answered)
        d = next(d for d in unknown if d.abstained)
        assert d.label is None and d.to_dict()["abstained"] is True and d.ood_score > d.threshold


def test_abstain_without_calibration_names_the_fix(tmp_path):
    with Memory.create(tmp_path / "m", encoder=None, dim=4) as memory:
        memory.add_vectors(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
        with pytest.raises(InvalidInputError, match="vismem calibrate"):
            memory.classify_vectors(np.eye(4, dtype=np.float32)[:1], abstain=True)
