"""Training under torchrun: two CPU processes (gloo) train one model. Both end with the same weights
and the same history, each drew its own crops, only rank 0 wrote files, a resumed run ends where an
uninterrupted one ends, and a time budget stops both ranks at the same step (ranks that disagree
would wait for each other forever: the launch's timeout fails the test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.net.modelfile import load_model, read_payload
from model.training.checkpoints import checkpoint_dir_for, history_csv_for
from tests.engine.scenes import write_pair

RANK_SCRIPT = Path(__file__).with_name("distributed_rank.py")
REPOSITORY = Path(__file__).resolve().parents[2]
RANKS = 2
LAUNCH_TIMEOUT_S = 90
# a rank that waits this long prints its threads' stacks and exits: the failure shows the exchange it waits in
HANG_DUMP_S = 60


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def scene(folder: Path) -> tuple[str, str]:
    rng = np.random.default_rng(1)
    labels = np.zeros((96, 96), np.uint8)
    for row, col in rng.integers(0, 84, (8, 2)):
        labels[row : row + 10, col : col + 10] = 2
    return write_pair(folder, "scene", labels)


def launch(folder: Path, scene: tuple[str, str], name: str, **overrides) -> tuple[Path, list[dict]]:
    """Trains ``<folder>/<name>/model.pt`` on two ranks; returns the model path and each rank's record."""
    output = folder / name / "model.pt"
    results = folder / f"{name}_ranks"
    results.mkdir()
    settings = {
        **dict(
            images=[scene[0]],
            labels=[scene[1]],
            building_values=[2],
            output_model=str(output),
            epochs=2,
            patches_per_epoch=16,  # 2 steps per epoch: 2 ranks x batch 4
            batch_size=4,
            base_width=4,
            tile_size_px=32,
            seed=3,
            device="cpu",
            hang_dump_s=HANG_DUMP_S,
        ),
        **overrides,
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}"]
    launcher = subprocess.Popen(
        [*command, str(RANK_SCRIPT), json.dumps(settings), str(results)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, _ = launcher.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # ranks waiting for each other: torchrun ends them on SIGTERM
        launcher.terminate()
        log, _ = launcher.communicate(timeout=60)
        pytest.fail(f"the ranks did not finish within {LAUNCH_TIMEOUT_S} s:\n{log[-3000:]}")
    # the head: a hung rank's stacks come first, before torchrun's report of the rank that exited
    assert launcher.returncode == 0, log[:8000]
    return output, [json.loads((results / f"rank{rank}.json").read_text()) for rank in range(RANKS)]


@pytest.fixture(scope="module")
def two_epochs(folder: Path, scene: tuple[str, str]) -> tuple[Path, list[dict]]:
    return launch(folder, scene, "two_epochs")


def test_two_ranks_train_one_model_from_their_own_crops_and_only_rank_0_writes(two_epochs):
    output, (main, other) = two_epochs
    assert len(main["checksums"]) == 2 and main["checksums"] == other["checksums"]
    # each rank validated its own share of the crops, and the shares' counts were added up: same metrics
    shares = [{tuple(crop) for crop in rank["validated"]} for rank in (main, other)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert json.dumps(main["history"]) == json.dumps(other["history"])
    assert main["best_epoch"] == other["best_epoch"]
    assert len(main["crops"]) == len(other["crops"]) == 2 * 2 * 4  # an epoch's 16 crops shared out
    assert main["crops"] != other["crops"]

    assert other["writes"] == []
    assert main["writes"]  # the audit hook sees rank 0's writes, so it would see rank 1's
    checkpoints = checkpoint_dir_for(output)
    assert sorted(output.parent.iterdir()) == sorted([output, history_csv_for(output), checkpoints])
    assert [path.name for path in checkpoints.iterdir()] == ["last.pt"]

    loaded = load_model(output)
    assert loaded.info.epoch == 2 and len(loaded.info.history) == 2
    assert len(history_csv_for(output).read_text().splitlines()) == 1 + 2
    last = read_payload(checkpoints / "last.pt")
    assert len(last["rng_by_rank"]) == RANKS


def test_resumed_two_rank_run_ends_where_an_uninterrupted_one_ends(folder, scene, two_epochs):
    # rank 1 alone is asked to cancel after epoch 1: both ranks stop at the same step
    first, cancelled = launch(folder, scene, "first_epoch", cancel_on=[1, 1])
    assert [rank.get("cancelled") for rank in cancelled] == [True, True]
    assert [len(rank["checksums"]) for rank in cancelled] == [1, 1]
    _, resumed = launch(folder, scene, "resumed", resume_from=str(checkpoint_dir_for(first) / "last.pt"))
    _, uninterrupted = two_epochs
    assert [rank["checksums"][-1] for rank in resumed] == [rank["checksums"][-1] for rank in uninterrupted]
    assert [epoch["train_loss"] for epoch in resumed[0]["history"]] == [
        epoch["train_loss"] for epoch in uninterrupted[0]["history"]
    ]
    # each rank continued its own crops: rank 1 drew in epoch 2 what it draws in an uninterrupted run
    assert resumed[1]["crops"] == uninterrupted[1]["crops"][8:]


def test_a_time_budget_stops_both_ranks_at_the_same_step(folder, scene):
    # epochs of 10,000 steps: only the budget of 2 s can end this run, in the middle of epoch 1; unseeded,
    # the ranks take rank 0's random seed
    output, (main, other) = launch(
        folder, scene, "budget", epochs=1, patches_per_epoch=80_000, time_budget_s=2.0, seed=None
    )
    assert main["seed"] == other["seed"]
    assert "time budget" in main["stop_reason"] and main["stop_reason"] == other["stop_reason"]
    assert main["checksums"] == other["checksums"]
    assert 0 < main["history"][0]["train_batches"] == other["history"][0]["train_batches"] < 10_000
    assert load_model(output).info.epoch == 1
