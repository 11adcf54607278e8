"""A QAT run killed mid-way and resumed from its checkpoint ends where the uninterrupted run ends.

2 CPU ranks (gloo, torchrun), 12 steps, a checkpoint every 4. In the killed run rank 1
SIGKILLs itself after step 6 (between checkpoints, after the batch-norm freeze at step 5,
before the observer freeze at step 9), torchrun tears the job down, and a new launch
resumes from step 4. The model has dropout (per-rank random streams) and batch-norm.
"""

import pytest
import torch

import pt2e_int8 as q
from tests.distributed._launch import run_worker, torchrun


@pytest.fixture(scope="module")
def runs(training_run, tmp_path_factory):
    full, killed = training_run / "full", tmp_path_factory.mktemp("killed")  # full: the uninterrupted run
    crashed = torchrun("tests.distributed._workers", "train", killed, 12, 4, 6)
    assert crashed.returncode != 0, "the killed run did not fail"
    assert not (killed / "final.pt").exists()
    saved = torch.load(killed / "checkpoint.pt", weights_only=True)
    run_worker("train", killed, 12, 4, 0, 1)
    return full, killed, saved


def test_the_crash_left_the_last_complete_checkpoint(runs):
    _, _, saved = runs
    assert saved["extra"] == {"step": 4} and saved["schedule"]["steps"] == 4
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    assert not torch.equal(saved["rng"][0]["cpu"], saved["rng"][1]["cpu"])  # each rank's own dropout stream


def test_resumed_run_ends_where_the_uninterrupted_one_does(runs):
    full, killed, _ = runs
    a = torch.load(full / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed run differs in {differ}"
    assert any("activation_post_process" in k and k.endswith("min_val") for k in a)  # observers compared too


def test_a_damaged_checkpoint_is_a_clear_error(runs, tmp_path):
    full, _, _ = runs
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((full / "checkpoint.pt").read_bytes()[:5000])
    pm = q.prepare_qat(torch.nn.Sequential(torch.nn.Linear(64, 10)), (torch.randn(4, 64),))
    with pytest.raises(q.InputFileError, match="not a readable QAT checkpoint"):
        q.load_qat_checkpoint(damaged, pm)
    with pytest.raises(q.InputFileError, match="does not match this prepared model"):
        q.load_qat_checkpoint(full / "checkpoint.pt", pm)


def test_one_process_checkpoint_round_trip_and_extra_check(tmp_path):
    """Without torch.distributed: save, load into a fresh prepared model, same state; bad extra refused."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.randn(16, 8)
    pm = q.prepare_qat(model, (x,))
    opt = torch.optim.Adam(pm.parameters(), lr=1e-2)
    sched = q.QATSchedule(pm, freeze_observers_after=2)
    for _ in range(3):
        opt.zero_grad()
        pm(x).pow(2).mean().backward()
        opt.step()
        sched.step()
    with pytest.raises(q.ConfigError, match=r"extra\['when'\] is a object"):
        q.save_qat_checkpoint(tmp_path / "bad.pt", pm, extra={"when": object()})
    assert not (tmp_path / "bad.pt").exists()
    q.save_qat_checkpoint(tmp_path / "ckpt.pt", pm, opt, sched, extra={"step": 3})
    fresh = q.prepare_qat(model, (x,))
    opt2 = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    sched2 = q.QATSchedule(fresh)
    assert q.load_qat_checkpoint(tmp_path / "ckpt.pt", fresh, opt2, sched2) == {"step": 3}
    assert sched2.steps == 3 and sched2.freeze_observers_after == 2
    a, b = pm.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    torch.testing.assert_close(q.convert(fresh)(x), q.convert(pm)(x), rtol=0, atol=0)
