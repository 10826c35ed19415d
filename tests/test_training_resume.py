"""Checkpoints and resume: exact continuation, graceful signals, kill -9, corrupt checkpoints."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_model_checkpoint import scramble_middle
from training_fixtures import make_inputs, make_pretraining_data, signal_at, tiny_config

import pre_training
from common.errors import UserError
from model.checkpoint import load_model
from training.checkpoint import step_dir_name
from training.pretraining_stage import PretrainingStage
from training.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def weights(path: Path) -> dict:
    model, _, _ = load_model(path)
    return model.state_dict()


def test_stop_by_sigterm_then_resume_is_bitwise_identical(tmp_path, inputs):
    straight = train(tiny_config(tmp_path, *inputs, run_name="straight"), PretrainingStage)

    config = tiny_config(tmp_path, *inputs, run_name="stopped")
    first = train(config, signal_at(2, signal.SIGTERM))
    assert first.stopped_by_signal == signal.SIGTERM
    assert first.step == 3, "the step in progress is finished, then the run stops"
    assert (first.run_dir / "latest").read_text().strip() == step_dir_name(3)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, "handlers are restored"

    second = train(
        tiny_config(tmp_path, *inputs, run_name="stopped", resume=True), PretrainingStage
    )
    assert second.step == 8
    assert first.losses + second.losses == straight.losses  # exact float equality
    a, b = weights(straight.run_dir), weights(second.run_dir)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_sigint_through_the_cli_saves_and_exits_130(tmp_path, inputs, monkeypatch, capsys):
    monkeypatch.setattr(pre_training, "PretrainingStage", signal_at(4, signal.SIGINT))
    config = tiny_config(tmp_path, *inputs)
    argv = [
        f"--{key}={value}"
        for key, value in config.to_dict().items()
        if key not in ("model_overrides", "init_from")
    ]
    assert pre_training.main(argv) == 128 + signal.SIGINT
    assert "--resume=true" in capsys.readouterr().err
    run_dir = tmp_path / "checkpoints" / "run"
    assert (run_dir / "latest").read_text().strip() == step_dir_name(5)
    load_model(run_dir)  # loadable


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_usable(tmp_path, inputs):
    """A real SIGKILL while step 8 is being written (the write is slowed down to hit it)."""
    script = """
import sys, time
from pathlib import Path
import torch
original = torch.save
def slow_save(state, path, *args, **kwargs):
    original(state, path, *args, **kwargs)
    if "step_0000008" in str(path):
        print("SAVING", flush=True)
        time.sleep(120)
torch.save = slow_save
sys.path.insert(0, "tests")
from training_fixtures import tiny_config
from training.pretraining_stage import PretrainingStage
from training.trainer import train
torch.set_num_threads(1)
train(tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])), PretrainingStage)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), *map(str, inputs)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:
            if line.strip() == "SAVING" or time.monotonic() > deadline:
                break
        assert process.poll() is None, "the run ended before its second checkpoint"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    run_dir = tmp_path / "checkpoints" / "run"
    assert (run_dir / "latest").read_text().strip() == step_dir_name(4)
    assert list(run_dir.glob(step_dir_name(8) + ".tmp-*")), "the half-written folder is there"
    load_model(run_dir)  # `latest` is complete and loadable

    resumed = train(tiny_config(tmp_path, *inputs, resume=True), PretrainingStage)
    assert resumed.step == 8 and len(resumed.losses) == 4
    assert not list(run_dir.glob("*.tmp-*")), "leftovers of the killed run are removed"
    assert (run_dir / "latest").read_text().strip() == step_dir_name(8)


@pytest.mark.parametrize(
    "damage",
    [
        "truncate model.safetensors",
        "garbage training_state.pt",
        "garbage config.json",
        "scramble model.safetensors",  # same size and header: only the checksum tells
        "scramble training_state.pt",
    ],
)
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, inputs, damage, capsys):
    train(tiny_config(tmp_path, *inputs), PretrainingStage)  # checkpoints at 4 and 8
    step_dir = tmp_path / "checkpoints" / "run" / step_dir_name(8)
    action, name = damage.split()
    path = step_dir / name
    if action == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif action == "scramble":
        scramble_middle(path)
    else:
        path.write_bytes(b"\x00garbage")
    resumed = train(tiny_config(tmp_path, *inputs, resume=True, max_steps=10), PretrainingStage)
    err = capsys.readouterr().err
    assert (
        f"{step_dir_name(8)} is unreadable" in err and f"falling back to {step_dir_name(4)}" in err
    )
    assert resumed.step == 10 and len(resumed.losses) == 6, "continued from step 4"
    if action == "scramble":
        assert f"{name} does not match its checksum" in err


def test_resume_with_an_incompatible_config_lists_the_differences(tmp_path, inputs):
    train(tiny_config(tmp_path, *inputs, max_steps=4), PretrainingStage)
    with pytest.raises(UserError) as error:
        train(
            tiny_config(
                tmp_path,
                *inputs,
                resume=True,
                micro_batch_size=2,
                seed=8,
                model_overrides={"n_layer": 3},
                optimizer="muon",
            ),
            PretrainingStage,
        )
    message = str(error.value)
    assert "\n" not in message
    for key in (
        "model.n_layer (checkpoint 2, now 3)",
        "micro_batch_size (checkpoint 4, now 2)",
        "seed (checkpoint 7, now 8)",
        "optimizer (checkpoint 'adamw', now 'muon')",
    ):
        assert key in message
    assert "block_size" not in message
    # a step of another size (another process count, tokens_per_step) reads other data
    with pytest.raises(UserError, match=r"micro_batches_per_step \(checkpoint 1, now 2\)"):
        train(tiny_config(tmp_path, *inputs, resume=True, tokens_per_step=256), PretrainingStage)
    # what changes neither the model, the data nor the batch may change
    resumed = train(
        tiny_config(tmp_path, *inputs, resume=True, max_steps=5, learning_rate=1e-3),
        PretrainingStage,
    )
    assert resumed.step == 5


def test_resume_on_other_data_names_data_dir(tmp_path, inputs):
    """Bug guarded: --resume compared the model and the batch but not --data_dir, so a run went
    on silently with other corpora or other mixture weights."""
    tokenizer, data = inputs
    other = make_pretraining_data(tmp_path / "other" / "tokenized", tokenizer)
    train(
        tiny_config(tmp_path, tokenizer, f"{data}:0.5,{other}:0.5", max_steps=2), PretrainingStage
    )
    for changed in (data, f"{data}:0.8,{other}:0.2"):
        with pytest.raises(UserError, match=r"data_dir \(checkpoint '.*', now '.*'\)"):
            train(tiny_config(tmp_path, tokenizer, changed, resume=True), PretrainingStage)


def test_a_finished_run_is_not_silently_reused_or_resumed_from_nothing(tmp_path, inputs):
    with pytest.raises(UserError, match="no checkpoint"):
        train(tiny_config(tmp_path, *inputs, resume=True), PretrainingStage)
    assert not (tmp_path / "checkpoints" / "run").exists(), "a failed --resume creates nothing"
    train(tiny_config(tmp_path, *inputs, max_steps=4), PretrainingStage)
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny_config(tmp_path, *inputs, max_steps=4), PretrainingStage)
    again = train(tiny_config(tmp_path, *inputs, max_steps=2, overwrite=True), PretrainingStage)
    assert again.step == 2
    finished = train(tiny_config(tmp_path, *inputs, max_steps=2, resume=True), PretrainingStage)
    assert finished.step == 2 and finished.losses == [], "nothing left to do"


def test_resume_with_another_block_size_names_it_and_nothing_misleading(tmp_path, inputs):
    """Bug guarded: the changed block size changed the micro-batches per step, and the error
    blamed the GPU count and suggested --tokens_per_step=0."""
    train(tiny_config(tmp_path, *inputs, max_steps=2, tokens_per_step=256), PretrainingStage)
    with pytest.raises(UserError) as error:
        train(
            tiny_config(tmp_path, *inputs, resume=True, tokens_per_step=256, block_size=16),
            PretrainingStage,
        )
    message = str(error.value)
    assert "block_size (checkpoint 32, now 16)" in message
    assert "tokens_per_step=0" not in message and "processes" not in message


def test_keep_last_and_best_pointer(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, max_steps=12, checkpoint_interval=2, keep_last=2)
    result = train(config, PretrainingStage)
    names = sorted(p.name for p in result.run_dir.iterdir() if p.name.startswith("step_"))
    best = (result.run_dir / "best").read_text().strip()
    assert names[-2:] == [step_dir_name(10), step_dir_name(12)]
    assert set(names) == {best, step_dir_name(10), step_dir_name(12)}


def test_a_resumed_run_logs_each_step_once(tmp_path, inputs):
    train(tiny_config(tmp_path, *inputs, max_steps=6, checkpoint_interval=4), PretrainingStage)
    # pretend the run crashed after step 6 but before its last save: resume from step 4
    run_dir = tmp_path / "checkpoints" / "run"
    (run_dir / "latest").write_text(step_dir_name(4) + "\n")
    # TensorBoard reads a folder's event files in name order: time (whole seconds), host, pid,
    # then a per-process counter compared as text ("10" < "9"). A resumed run is a new process
    # seconds later; in one test process, a later second keeps the files in the runs' order.
    time.sleep(1.0)
    train(tiny_config(tmp_path, *inputs, max_steps=6, resume=True), PretrainingStage)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val/loss")] == [4, 6]


def test_best_is_chosen_only_among_checkpoints_whose_weights_were_evaluated(tmp_path, inputs):
    """Bug guarded: a checkpoint saved between evaluations (or on SIGTERM) carried the val loss
    of OLDER weights, so `best` could point at weights that were never validated."""
    config = tiny_config(
        tmp_path, *inputs, max_steps=6, eval_interval=2, checkpoint_interval=3, keep_last=2
    )
    result = train(config, PretrainingStage)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("val/loss")}
    assert sorted(logged) == [2, 4, 6]

    def saved_val_loss(step):
        path = result.run_dir / step_dir_name(step) / "config.json"
        return json.loads(path.read_text())["metrics"]["val_loss"]

    assert saved_val_loss(6) == pytest.approx(logged[6])
    # step 3 was never evaluated (the last evaluation was of step 2's weights)
    assert saved_val_loss(3) is None
    assert (result.run_dir / "best").read_text().strip() == step_dir_name(6)


def test_a_second_process_on_the_same_run_is_refused_before_it_touches_anything(tmp_path, inputs):
    """Bug guarded: the same --resume command in two terminals: both trained and wrote into one
    folder, mixing steps and TensorBoard events. The run folder's lock is held by the first
    process for the whole run; the second gets one line naming it and changes nothing."""
    from common.locking import lock_path

    holders = []

    class Spy(PretrainingStage):  # looks at the lock while the run trains
        def train_micro_batch(self, step, micro_index):
            if step == 1:
                holders.append(lock_path(self.context.config.checkpoint_dir + "/run").read_text())
            return super().train_micro_batch(step, micro_index)

    train(tiny_config(tmp_path, *inputs, max_steps=4), Spy)
    assert holders == [f"{os.getpid()}\n"] * len(holders) and holders
    run_dir = tmp_path / "checkpoints" / "run"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    holder = subprocess.Popen(  # another process holding the run, as a training run would
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom common.locking import folder_lock\n"
            "with folder_lock(sys.argv[1], 'training run'):\n    print('LOCKED', flush=True)\n"
            "    time.sleep(60)",
            str(run_dir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(UserError) as error:
            train(tiny_config(tmp_path, *inputs, max_steps=8, resume=True), PretrainingStage)
    finally:
        holder.kill()
        holder.wait()
    message = str(error.value)
    assert "\n" not in message and f"process {holder.pid} holds its lock" in message
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before, "nothing touched"
    resumed = train(tiny_config(tmp_path, *inputs, max_steps=8, resume=True), PretrainingStage)
    assert resumed.step == 8, "the lock of a killed holder is no obstacle"


@pytest.mark.parametrize("failure", ["ENOSPC", "short write"])
def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, inputs, monkeypatch, failure
):
    """Bug guarded: a checkpoint written to a full filesystem ended in `RuntimeError: [enforce
    fail at inline_container.cc:...] unexpected pos`."""
    import errno

    from common import disk_space

    save = torch.save

    def full_disk_at_step_8(state, path, *args, **kwargs):
        if "step_0000008" not in str(path):
            return save(state, path, *args, **kwargs)
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(disk_space, "free_bytes", lambda path: 3 << 20)  # 3 MiB left
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1216")

    monkeypatch.setattr(torch, "save", full_disk_at_step_8)
    with pytest.raises(UserError) as error:
        train(tiny_config(tmp_path, *inputs), PretrainingStage)
    run_dir = tmp_path / "checkpoints" / "run"
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"no space left on the disk at {run_dir}")
    assert (run_dir / "latest").read_text().strip() == step_dir_name(4)
    assert not list(run_dir.glob("*.tmp-*")), "the partial checkpoint is gone"
    monkeypatch.setattr(torch, "save", save)
    resumed = train(tiny_config(tmp_path, *inputs, resume=True), PretrainingStage)
    assert resumed.step == 8 and len(resumed.losses) == 4


def test_a_run_started_from_init_from_resumes_after_that_folder_is_gone(tmp_path, inputs):
    """The run's own checkpoint gives the model on --resume: the --init_from folder is only
    read to start, and users delete or move such folders."""
    train(tiny_config(tmp_path, *inputs, run_name="source", max_steps=2), PretrainingStage)
    source = tmp_path / "checkpoints" / "source"
    started = tiny_config(tmp_path, *inputs, init_from=str(source), model_preset=None)
    train(dataclasses.replace(started, max_steps=4), PretrainingStage)
    shutil.rmtree(source)
    resumed = train(dataclasses.replace(started, max_steps=8, resume=True), PretrainingStage)
    assert resumed.step == 8 and len(resumed.losses) == 4  # continued from step 4
