"""vaediag.watch.journal: watchdog.jsonl lines are whole JSON, appended, durable, read past damage."""

from __future__ import annotations

import json
import math
import threading

import pytest

from vaediag.errors import InputError
from vaediag.watch.journal import Journal, decision_record, read_journal
from vaediag.watch.policies import LadderPolicy


def test_journal_lines_are_complete_json_and_durable(tmp_path):
    p = LadderPolicy(kl_weight=1e-5, profile="seed")
    d = p.update(9, {"kl": 1535.0, "recon": 0.111})
    with Journal(tmp_path) as j:
        j.append(decision_record(d, metrics={"kl": 1535.0, "psnr": math.nan}, policy=p, applied=True, seq=1,
                                 via="control"))
        j.event("exit", code=0)
    lines = (tmp_path / "watchdog.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]  # strict JSON: NaN written as a string
    assert recs[0]["metrics"]["psnr"] == "nan"
    assert recs[0]["reason"] == ("kl = 1535 > 500; penalty 1e-05 x 1535 = 13.8% of recon 0.111 > 10% after epoch 10: "
                                 "kl_weight 1e-05 -> 1e-07 (100x: the penalty to <= 1% of recon) [seed profile]")
    assert recs[0]["state"]["rung"] == 1 and recs[0]["params"]["target_kl"] == 500.0
    assert recs[0]["profile"] == "seed" and recs[0]["params"]["profile"] == "seed"
    assert recs[1]["event"] == "exit"


def test_journal_appends_and_skips_a_torn_last_line(tmp_path):
    with Journal(tmp_path) as j:
        j.event("start")
    with Journal(tmp_path) as j:  # a second session appends, never truncates
        j.event("note", text="again")
    with open(tmp_path / "watchdog.jsonl", "a") as fh:
        fh.write('{"event": "decision", "epo')  # killed mid-write
    assert [r["event"] for r in read_journal(tmp_path)] == ["start", "note"]


def test_journal_damaged_middle_and_missing(tmp_path):
    (tmp_path / "watchdog.jsonl").write_text('{"event": "start"}\nnot json\n[1]\n{"event": "exit"}\n')
    assert [r["event"] for r in read_journal(tmp_path)] == ["start", "exit"]  # the good lines around it stay
    with pytest.raises(InputError, match=r"no watchdog journal at"):
        read_journal(tmp_path / "nothing")
    with pytest.raises(InputError, match=r"cannot write the watchdog journal"):
        Journal(tmp_path / "missing_dir" / "watchdog.jsonl")


def test_concurrent_journal_writers_never_interleave(tmp_path):
    def writer(k):
        with Journal(tmp_path) as j:
            for i in range(100):
                j.event("note", text=f"{k}-{i}-" + "x" * 500)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_journal(tmp_path)) == 400
