"""Verdict files and their merge into claims.json."""

import pytest

from rankcollapse.verdict import CLAIMS, Verdict, merge


def test_merge_fills_missing_claims_with_not_run(tmp_path):
    Verdict("C1", "qualified", "holds off F4", evidence={"x": 1.5}).write(
        tmp_path / "C1.json"
    )
    out = merge([tmp_path / "C1.json"])
    assert list(out) == list(CLAIMS)
    assert out["C1"]["verdict"] == "qualified" and out["C1"]["evidence"] == {"x": 1.5}
    assert {out[c]["verdict"] for c in CLAIMS if c != "C1"} == {"not run"}


def test_round_trip(tmp_path):
    v = Verdict("C4", "confirmed", "s", evidence={"k": [1, 2]}, files=["a.csv"])
    v.write(tmp_path / "v.json")
    assert Verdict.read(tmp_path / "v.json") == v


@pytest.mark.parametrize("claim,verdict", [("C9", "confirmed"), ("C1", "probably")])
def test_rejects_unknown_claims_and_outcomes(claim, verdict):
    with pytest.raises(ValueError):
        Verdict(claim, verdict, "")
