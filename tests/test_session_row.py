"""scripts/session_row.py: a session's table row (steps, time, loss range, validations) from a
checkpoint's train_state.json, on a made-up history whose every number is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from session_row import main, session_row  # noqa: E402


def _state() -> dict:
    """Steps 0 to 3,000 at batch 128, 2 s a step; validations at 1,000, 2,000 and 3,000."""
    steps = range(100, 3001, 100)
    at = (1000, 2000, 3000)
    val = {
        "Set5": {"2": [[s, 37.0 + s / 1e4] for s in at], "3": [[s, 33.0] for s in at]},
        "Set5 EMA": {"2": [[s, 37.1 + s / 1e4] for s in at], "3": [[s, 33.1] for s in at]},
    }
    return {
        "step": 3000, "patches_seen": 128 * 3000, "seconds": 6000.0,
        "history": {"loss": [[s, 400.0 - s / 100] for s in steps], "time": [[s, 2.0 * s] for s in steps], "val": val},
    }  # fmt: skip


def test_row_covers_only_the_session():
    row = session_row(_state(), since=1000)
    head, body = row.split(" | ")
    assert head == "1,000 to 3,000 (67 min; 2.00 s a step, 64 patches/s, validation and saves included)"
    # the loss after step 1,000 only: 400 - 11 ... 400 - 30
    assert body.startswith("The summed loss 370 to 389. ")
    assert "at 1,000" not in body  # the resumed-from step's validation belongs to the last session
    assert "37.20 / 33.00; 37.300 / 33.100 at 2,000." in body
    assert body.endswith("**37.30 / 33.00; 37.400 / 33.100 at 3,000** (0.38M patch-steps)")


def test_several_validation_sets_are_named():
    state = _state()
    state["history"]["val"]["Set14"] = {"2": [[3000, 33.5]]}
    body = session_row(state, since=2000).split(" | ")[1]
    assert "Set5 **37.30 / 33.00; 37.400 / 33.100 at 3,000**" in body
    assert body.endswith("Set14 **33.50 at 3,000** (0.38M patch-steps)")


def test_since_not_a_read_point_leaves_the_time_out():
    assert session_row(_state(), since=1050).split(" | ")[0] == "1,050 to 3,000"


def test_cli_prints_the_row_and_refuses_a_stale_since(tmp_path, capsys):
    (tmp_path / "train_state.json").write_text(json.dumps(_state()))
    assert main([str(tmp_path), "--since", "2000"]) == 0
    assert capsys.readouterr().out.startswith("2,000 to 3,000 (33 min;")
    assert main([str(tmp_path), "--since", "3000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train_state.json" in err and "not after --since 3000" in err and "\n" not in err
    assert main([str(tmp_path / "missing"), "--since", "0"]) == 2


def test_from_the_start():
    assert session_row(_state(), since=0).startswith("0 to 3,000 (100 min; 2.00 s a step, 64 patches/s")
