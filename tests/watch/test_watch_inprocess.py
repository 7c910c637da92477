"""vaediag.watch.inprocess: KLWatchdog inside any training loop; the README example runs as written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vaediag.watch.journal import read_journal


@pytest.mark.slow
def test_klwatchdog_readme_example_runs(tmp_path):
    import textwrap

    from vaediag.watch import KLWatchdog

    doc = KLWatchdog.__doc__
    start = doc.rfind("\n", 0, doc.index("import torch")) + 1
    end = doc.index("    ``decision.action``")
    example = textwrap.dedent(doc[start:end]).replace("run_dir=None", f"run_dir={str(tmp_path)!r}")
    r = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + example],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("0 set_kl_weight psnr = ")
    recs = read_journal(tmp_path)
    assert [x["epoch"] for x in recs] == [0, 1, 2, 3, 4] and all(x["via"] == "in_process" for x in recs)


def test_klwatchdog_state_and_ae_mode(tmp_path):
    from vaediag.watch import KLWatchdog

    wd = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, ae_at=2, stop_at=3, run_dir=tmp_path, profile="seed")
    assert wd.step(0, {"kl": 900.0}).kl_weight == pytest.approx(1e-4)
    assert wd.kl_weight == pytest.approx(1e-4)
    d = wd.step(1, {"kl": 900.0})
    assert d.action == "switch_to_ae" and wd.mode == "ae" and wd.kl_weight == 0.0
    again = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, ae_at=2, stop_at=3)
    again.load_state_dict(json.loads(json.dumps(wd.state_dict())))
    assert again.mode == "ae" and again.policy.rung == 2
    with pytest.raises(ValueError, match="does not know the kl_weight yet"):
        KLWatchdog("controlvae").kl_weight
    wd.close()


def test_klwatchdog_decides_its_profile_as_check_does(tmp_path):
    """profile=: a run directory holding our trainer's config.json is judged by the seed profile, anything else
    (or no run directory: your own loop) by the generic one; the journal says which and why."""
    from vaediag.errors import UsageError
    from vaediag.watch import KLWatchdog
    from vaediag.watch.policies import make_policy

    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "config.json").write_text(json.dumps({"train_npy": "t.npy", "val_npy": "v.npy", "kl_weight": 1e-3,
                                                  "latent_dim": 512}))
    m = {"kl": 2000.0, "recon": 100.0}  # penalty 2 % of recon: only the seed's KL limit says cut
    wd = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, run_dir=ours)
    assert wd.step(0, m).action == "set_kl_weight" and wd.policy.judged_by == "seed"
    judged = [r for r in read_journal(ours) if r["event"] == "profile"]
    assert judged[0]["profile"] == "seed" and "vaediag's trainer" in judged[0]["why"]
    wd.close()
    for kw in ({"run_dir": tmp_path / "theirs"}, {}):
        (tmp_path / "theirs").mkdir(exist_ok=True)
        wd = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, **kw)
        d = wd.step(0, m)
        assert d.action == "keep" and d.profile == "generic" and d.reason.endswith("[generic profile]")
        wd.close()
    wd = KLWatchdog("ladder", kl_weight=1e-3, reduce_at=1, run_dir=tmp_path / "theirs", profile="seed")
    assert wd.step(0, m).action == "set_kl_weight"  # asked for
    wd.close()
    with pytest.raises(UsageError, match="policy 'geco' has no parameter 'profile'"):
        KLWatchdog("geco", profile="seed")
    with pytest.raises(TypeError, match="not to KLWatchdog"):
        KLWatchdog(make_policy("ladder"), profile="seed")
