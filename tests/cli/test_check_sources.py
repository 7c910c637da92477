"""`vaediag check` on folders that hold only CSV or JSON metrics logs: it says which files it read."""

from __future__ import annotations

import json

from lineages import write_hf_trainer, write_lightning, write_wandb_export
from vaediag.cli import main


def _check(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_names_the_files_of_a_tree_of_csv_and_json_logs(tmp_path, capsys):
    write_lightning(tmp_path / "pl", epochs=4, steps_per_epoch=20, logger="csv")
    write_hf_trainer(tmp_path / "hf", epochs=3, steps_per_epoch=20, tensorboard=False, trainer_state=True)
    write_wandb_export(tmp_path / "wandb", fmt="jsonl", epochs=3)
    rc, out, err = _check(capsys, str(tmp_path))
    assert rc in (0, 1) and err == ""
    assert "read from metrics.csv (Lightning CSVLogger)" in out
    assert "read from trainer_state.json (HF Trainer state)" in out
    assert "read from history.jsonl (JSONL export)" in out
    assert "3 runs checked" in out
    rc, out, err = _check(capsys, str(tmp_path), "--json")
    doc = json.loads(out)
    assert {r["run"]: r["source"] for r in doc["runs"]} == {
        "hf/vae-out": {"kind": "hf_trainer_state", "label": "HF Trainer state", "files": ["trainer_state.json"]},
        "pl/lightning_logs/version_0": {"kind": "lightning_csv", "label": "Lightning CSVLogger",
                                        "files": ["metrics.csv"]},
        "wandb": {"kind": "jsonl", "label": "JSONL export", "files": ["history.jsonl"]},
    }


def test_event_file_runs_keep_their_header_and_say_their_files_in_json(tmp_path, capsys):
    tr = write_lightning(tmp_path, epochs=3, steps_per_epoch=20)
    rc, out, _ = _check(capsys, str(tmp_path))
    assert not [ln for ln in out.splitlines() if ln.startswith(("read from", "not read"))]
    rc, out, _ = _check(capsys, str(tmp_path), "--json")
    (run,) = json.loads(out)["runs"]
    assert run["source"] == {"kind": "tensorboard", "label": "TensorBoard event files",
                             "files": [tr.event_files[0].name]}


def test_a_damaged_csv_is_a_finding_not_a_traceback(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "metrics.csv").write_text("epoch,step,val/kl\n0,9,3.0\n1,19,2.0,7\n2,29,1.")
    rc, out, err = _check(capsys, str(d), "--json")
    assert rc in (0, 1) and err == ""
    (run,) = json.loads(out)["runs"]
    msgs = [f["message"] for f in run["findings"] if f["rule"] == "log_warning"]
    assert any("metrics.csv: 1 row with the wrong number of fields skipped (first at line 3)" in m for m in msgs)
    assert any("metrics.csv: last line incomplete, 7 bytes ignored" in m for m in msgs)
