"""The training loop: it learns, accumulation is exact, logs what it promises, guards bad steps."""

import math

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from training_fixtures import (
    FixedPoolStage,
    logged_scalars,
    make_inputs,
    overfit_one_batch,
    tiny_config,
)

from common.errors import UserError
from model.checkpoint import load_model
from training.optimizer import build_optimizer, lr_multiplier
from training.pretraining_stage import PretrainingStage
from training.stage import IGNORE_INDEX
from training.trainer import train


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def test_debug_model_overfits_one_batch(tmp_path, inputs):
    losses = overfit_one_batch(tmp_path, inputs, learning_rate=1e-2, min_lr=1e-3)
    assert losses[0] > 5.0  # ~ln(300): the untrained model guesses uniformly
    assert losses[-1] < 0.05, "a 0.5M-parameter model must memorize 128 tokens"


def test_loss_falls_on_patterned_text_and_checkpoints_are_loadable(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, max_steps=40, eval_interval=20, checkpoint_interval=20)
    result = train(config, PretrainingStage)
    assert result.step == 40 and len(result.losses) == 40
    assert sum(result.losses[-5:]) / 5 < 0.5 * result.losses[0]
    assert result.val_loss < 2.0
    model, saved, tokenizer_json = load_model(result.run_dir)
    assert saved["stage"] == "pre_training" and saved["step"] == 40
    assert saved["train"]["micro_batch_size"] == 4, "the run config is saved with the weights"
    assert saved["tokenizer"]["sha256"] and tokenizer_json.is_file()
    weights = load_file(result.last_checkpoint / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k or k.startswith("module.")]
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_k_micro_batches_equal_one_big_batch_with_masked_targets(tmp_path, inputs, precision):
    """2 x 4 rows must give the step of 1 x 8 rows, though the rows hold different numbers
    of unmasked targets (a per-micro-batch mean would weight them wrongly)."""
    common = dict(max_steps=3, eval_interval=1000, checkpoint_interval=1000, precision=precision)
    one = tiny_config(tmp_path / "one", *inputs, micro_batch_size=8, tokens_per_step=256, **common)
    two = tiny_config(tmp_path / "two", *inputs, micro_batch_size=4, tokens_per_step=256, **common)
    result_one = train(one, FixedPoolStage)
    result_two = train(two, FixedPoolStage)
    tolerance = 1e-5 if precision == "fp32" else 2e-2
    assert result_one.losses == pytest.approx(result_two.losses, rel=tolerance)
    for (name, a), b in zip(
        result_one.model.state_dict().items(), result_two.model.state_dict().values()
    ):
        assert torch.allclose(a, b, atol=1e-4 if precision == "fp32" else 2e-2), name


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path, inputs):
    common = dict(max_steps=2, eval_interval=1000, checkpoint_interval=1000)
    plain = train(tiny_config(tmp_path / "a", *inputs, **common), FixedPoolStage)
    saved = train(
        tiny_config(tmp_path / "b", *inputs, activation_checkpointing=True, **common),
        FixedPoolStage,
    )
    assert plain.losses == pytest.approx(saved.losses, rel=1e-6)


def test_tensorboard_holds_every_promised_scalar_and_text(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, max_steps=4, eval_interval=2, log_interval=1)
    result = train(config, FixedPoolStage)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "perf/tokens_per_s",
        "perf/peak_memory_gb",
        "val/loss",
        "val/ppl",
        "debug/first_target_sum",
        "val/debug/first_target_sum",  # the stage's own metrics
    }
    assert expected | {"val/bpb"} <= scalars, expected - scalars
    if torch.cuda.is_available():
        assert "perf/mfu" in scalars

    def values(tag):
        return [event.value for event in events.Scalars(tag)]

    losses = values("train/loss")
    assert losses == pytest.approx(result.losses)
    assert values("train/lr") == pytest.approx(
        [config.learning_rate * lr_multiplier(step, config, 4) for step in range(4)]
    )
    assert all(norm > 0 for norm in values("train/grad_norm"))
    assert all(rate > 0 for rate in values("perf/tokens_per_s") + values("perf/peak_memory_gb"))
    targets = result.stage.validation_batches()[0]["targets"]  # one validation batch
    trained = targets != IGNORE_INDEX
    first_trained = trained[:, 0].sum().item() / trained.sum().item()
    assert values("val/debug/first_target_sum") == pytest.approx([first_trained] * 2)
    assert [event.step for event in events.Scalars("val/loss")] == [2, 4]
    val_loss = events.Scalars("val/loss")[-1].value
    assert events.Scalars("val/ppl")[-1].value == pytest.approx(math.exp(val_loss), rel=1e-4)


def test_text_samples_are_logged_for_the_pretraining_stage(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, max_steps=2, eval_interval=2)
    result = train(config, PretrainingStage)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert {"samples/story/text_summary", "samples/article/text_summary"} <= set(
        events.Tags()["tensors"]
    )


@pytest.mark.parametrize("grad_clip", [0.05, 0.0])
def test_the_optimizer_steps_on_gradients_clipped_to_grad_clip(
    tmp_path, inputs, monkeypatch, grad_clip
):
    """Bug guarded: a grad_clip that never reaches the gradients. AdamW (and Muon) hardly
    change when every gradient is scaled alike, so the loss cannot show it: look at the norm
    of the gradients the optimizer steps on."""
    from training import trainer as engine

    seen = []

    def spying_build_optimizer(model, config, device):
        optimizer = build_optimizer(model, config, device)
        step = optimizer.step

        def spy(*args, **kwargs):
            grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.cat(grads)).item())
            return step(*args, **kwargs)

        optimizer.step = spy
        return optimizer

    monkeypatch.setattr(engine, "build_optimizer", spying_build_optimizer)
    config = tiny_config(tmp_path, *inputs, max_steps=3, grad_clip=grad_clip, eval_interval=1000)
    result = train(config, FixedPoolStage)
    logged = logged_scalars(result.run_dir, "train/grad_norm")  # before clipping
    assert len(seen) == 3 and min(logged) > 0.05
    if grad_clip:
        assert seen == pytest.approx([grad_clip] * 3, rel=1e-4)
    else:
        assert seen == pytest.approx(logged, rel=1e-4)


def test_a_stage_must_name_itself():
    """Bug guarded: Stage.name defaulted to "pre_training", so a new stage that forgot it was
    saved (and resumed) as pre-training."""
    with pytest.raises(TypeError, match="must set the class attribute name"):

        class Nameless(FixedPoolStage):
            name = None


class NanAtStage(FixedPoolStage):
    """Returns a NaN loss on the listed steps (all steps when nan_steps is None)."""

    nan_steps: set | None = {1}

    def train_micro_batch(self, step, micro_index):
        batch = super().train_micro_batch(step, micro_index)
        batch["poison"] = torch.tensor(self.nan_steps is None or step in self.nan_steps)
        return batch

    def loss(self, model, batch):
        loss_sum, metrics = super().loss(model, batch)
        if "poison" in batch:  # validation batches are clean
            loss_sum = torch.where(batch["poison"], torch.nan, loss_sum)
        return loss_sum, metrics


def test_a_non_finite_step_is_skipped_and_counted(tmp_path, inputs):
    config = tiny_config(tmp_path, *inputs, max_steps=3, eval_interval=1000)
    result = train(config, NanAtStage)
    assert result.skipped_steps == 1
    assert math.isnan(result.losses[1]) and math.isfinite(result.losses[2])
    # The skipped step changed no weight: after steps 0 and 1 (skipped), the weights are those
    # of a clean run after step 0 (warmup makes step 0's learning rate the same in both).
    skipped = train(
        tiny_config(tmp_path / "a", *inputs, max_steps=2, eval_interval=1000), NanAtStage
    )
    clean = train(
        tiny_config(tmp_path / "b", *inputs, max_steps=1, eval_interval=1000), FixedPoolStage
    )
    assert skipped.skipped_steps == 1
    for (name, a), b in zip(skipped.model.state_dict().items(), clean.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_many_non_finite_steps_in_a_row_stop_the_run(tmp_path, inputs):
    class AlwaysNan(NanAtStage):
        nan_steps = None

    config = tiny_config(tmp_path, *inputs, max_steps=10, max_nonfinite_steps=3)
    with pytest.raises(UserError, match="not finite for 3 steps in a row"):
        train(config, AlwaysNan)


def test_out_of_memory_names_the_knobs(tmp_path, inputs):
    class Oom(FixedPoolStage):
        def loss(self, model, batch):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    with pytest.raises(UserError) as error:
        train(tiny_config(tmp_path, *inputs), Oom)
    for knob in ("micro_batch_size=4", "block_size=32", "activation_checkpointing"):
        assert knob in str(error.value)


def test_init_from_loads_weights_only(tmp_path, inputs):
    base = train(tiny_config(tmp_path, *inputs, run_name="base", max_steps=4), FixedPoolStage)
    config = tiny_config(
        tmp_path,
        *inputs,
        run_name="tuned",
        init_from=str(base.run_dir),
        max_steps=1,
        learning_rate=1e-12,
        min_lr=0.0,
        warmup_steps=0,
        weight_decay=0.0,
        model_preset="15m",
    )
    tuned = train(config, FixedPoolStage)
    assert tuned.step == 1, "a fresh loop, not the base run's step 4"
    assert tuned.model.config == base.model.config, "the architecture comes from the checkpoint"
    _, saved, _ = load_model(tuned.run_dir)
    assert saved["train"]["model_preset"] is None, "15m was not trained: it is not recorded"
    for (name, a), b in zip(tuned.model.state_dict().items(), base.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_mixed_precision_with_compile(tmp_path, inputs, precision):
    config = tiny_config(
        tmp_path,
        *inputs,
        device="cuda",
        precision=precision,
        compile=True,
        max_steps=6,
        eval_interval=3,
        checkpoint_interval=3,
    )
    result = train(config, FixedPoolStage)
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.losses[-1] < result.losses[0]
    weights = load_file(result.last_checkpoint / "model.safetensors")
    assert not [k for k in weights if "_orig_mod" in k], "compiled wrappers never reach the file"
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert events.Scalars("perf/peak_memory_gb")[-1].value > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_a_training_step_waits_for_the_gpu_only_once(tmp_path, inputs):
    """Host syncs stall the GPU: a step must have exactly one (reading its loss), however many
    micro-batches it accumulates. Bug guarded: torch.tensor(..., device="cuda") per step."""
    import warnings

    from training.device import host_to_device, setup_distributed
    from training.trainer import Trainer

    window = torch.arange(2 * 9).reshape(2, 9)
    inputs_view = window[:, :-1]  # strided, like a batch's inputs
    moved = host_to_device(inputs_view, torch.device("cuda"))
    assert moved.is_contiguous() and torch.equal(moved.cpu(), inputs_view)

    config = tiny_config(
        tmp_path,
        *inputs,
        device="cuda",
        precision="bf16",
        tokens_per_step=4 * 4 * 32,
    )
    trainer = Trainer(config, FixedPoolStage, setup_distributed(config.device))
    assert trainer.context.accumulation_steps == 4
    for _ in range(2):  # warm up: AdamW creates its state (one-off syncs) on its first step
        trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        trainer.log.close()
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= 1, syncs
