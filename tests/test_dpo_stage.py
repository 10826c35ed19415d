"""The DPO stage and script: ln 2 at the start, policy-only gradients, precomputed reference,
exact resume, metrics in TensorBoard, and each bad input."""

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from post_training_fixtures import (
    run_context,
    tiny_dpo_config,
    tiny_inputs,
    tiny_sft_checkpoint,
    tiny_sft_config,
    write_dpo_folder,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from training_fixtures import logged_scalars, torchrun

import post_training_dpo
from common.errors import UserError
from model.checkpoint import load_model
from tokenizer.tokenized_data import open_split
from training.dpo_stage import IDENTITY_FILE, VALUES_FILE, DPOStage, load_pairs
from training.sft_stage import SFTStage
from training.trainer import train

METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo")
    tiny_inputs(root)
    return root


@pytest.fixture(scope="module")
def start(root):
    return tiny_sft_checkpoint(root)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_first_step_loss_is_ln2_when_policy_is_the_reference(root, start, loss_type):
    result = train(
        tiny_dpo_config(root, start, run_name=f"ln2_{loss_type}", max_steps=1, loss_type=loss_type),
        DPOStage,
    )
    expected = math.log(2) if loss_type == "sigmoid" else (1 / (2 * 0.1)) ** 2  # z = 0
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)


def test_rpo_alpha_adds_the_mean_nll_of_each_chosen_reply(root, start):
    config = tiny_dpo_config(root, start)
    plain = DPOStage(run_context(config))
    rpo = DPOStage(run_context(dataclasses.replace(config, rpo_alpha=0.5)))
    policy = load_model(start)[0]
    batch = plain.train_micro_batch(0, 0)
    with torch.no_grad():
        loss, _ = plain.loss(policy, batch)
        loss_rpo, metrics = rpo.loss(policy, batch)
        # independently: per-token log-softmax of the chosen rows (the first half)
        B = batch["inputs"].shape[0] // 2
        log_probs = torch.log_softmax(policy(batch["inputs"][:B]).double(), dim=-1)
        targets = batch["targets"][:B]
        mask = targets != -100
        token = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, T]
        nll = -(token * mask).sum(dim=1) / mask.sum(dim=1)  # [B]
    assert loss_rpo.item() == pytest.approx(loss.item() + 0.5 * nll.sum().item(), rel=1e-5)
    assert metrics["nll/chosen"].item() == pytest.approx(nll.sum().item(), rel=1e-5)


def reply_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 summed log-probs [2B] and token counts [2B] of every row's reply, computed here."""
    log_probs = torch.log_softmax(model(batch["inputs"]).double(), dim=-1)  # [2B, T, V]
    targets = batch["targets"]
    mask = targets != -100
    token = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [2B, T]
    return (token * mask).sum(dim=1), mask.sum(dim=1)


@pytest.mark.parametrize(
    "loss_type, label_smoothing, rpo_alpha",
    [("sigmoid", 0.2, 0.0), ("robust", 0.1, 0.0), ("ipo", 0.0, 0.0), ("sigmoid", 0.0, 0.5)],
)
def test_stage_loss_is_the_papers_loss_of_its_settings(
    root, start, loss_type, label_smoothing, rpo_alpha
):
    """The stage's loss against the papers' formulas in float64, with a policy that moved away
    from the reference. Bugs guarded: IPO's per-token averaging dropped, label_smoothing or
    rpo_alpha not reaching the loss."""
    from test_dpo_loss import reference_loss

    config = tiny_dpo_config(
        root,
        start,
        loss_type=loss_type,
        beta=0.3,
        label_smoothing=label_smoothing,
        rpo_alpha=rpo_alpha,
    )
    stage = DPOStage(run_context(config))
    policy = load_model(start)[0]
    with torch.no_grad():
        policy.lm_head.weight.add_(0.05 * torch.randn_like(policy.lm_head.weight))  # step away
        batch = stage.train_micro_batch(0, 0)
        loss, _ = stage.loss(policy, batch)
        policy_logps, counts = reply_logps(policy, batch)
        reference_logps, _ = reply_logps(load_model(start)[0], batch)
    B = len(counts) // 2
    nll = -policy_logps[:B] / counts[:B]
    if loss_type == "ipo":  # IPO compares log-probs averaged over each reply's tokens
        policy_logps, reference_logps = policy_logps / counts, reference_logps / counts
    expected = sum(
        reference_loss(
            policy_logps[i].item(),
            policy_logps[B + i].item(),
            reference_logps[i].item(),
            reference_logps[B + i].item(),
            0.3,
            loss_type,
            label_smoothing,
        )
        + rpo_alpha * nll[i].item()
        for i in range(B)
    )
    assert counts[:B].ne(counts[B:]).any(), "replies of different lengths, or IPO is untested"
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_only_the_policy(root, start):
    config = tiny_dpo_config(root, start)
    stage = DPOStage(run_context(config))
    policy = load_model(start)[0].train()
    loss, metrics = stage.loss(policy, stage.train_micro_batch(0, 0))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(p.grad is None and not p.requires_grad for p in stage.reference.parameters())
    assert not stage.reference.training
    assert set(metrics) == set(METRICS)


def test_precomputed_reference_gives_the_live_loss(root, start, tmp_path):
    tokenizer_path, _, dpo_dir = tiny_inputs(root)
    data = write_dpo_folder(tmp_path / "dpo", tokenizer_path, json_pairs(dpo_dir))
    live = DPOStage(run_context(tiny_dpo_config(root, start, data_dir=str(data))))
    pre = DPOStage(
        run_context(tiny_dpo_config(root, start, data_dir=str(data), reference="precomputed"))
    )
    assert pre.reference is None
    for split in ("train", "test"):
        assert (data / split / VALUES_FILE).is_file() and (data / split / IDENTITY_FILE).is_file()
    policy = load_model(start)[0]
    with torch.no_grad():
        policy.lm_head.weight.add_(0.05 * torch.randn_like(policy.lm_head.weight))  # step away
        for step in range(3):
            a, metrics_a = live.loss(policy, live.train_micro_batch(step, 0))
            b, metrics_b = pre.loss(policy, pre.train_micro_batch(step, 0))
            assert b.item() == pytest.approx(a.item(), abs=1e-5)
            for name in METRICS:
                assert metrics_b[name].item() == pytest.approx(metrics_a[name].item(), abs=1e-4)

    # Another block (replies cut elsewhere) or reference checkpoint must not reuse these values.
    with pytest.raises(UserError, match="block_size=48"):
        DPOStage(
            run_context(
                tiny_dpo_config(
                    root, start, data_dir=str(data), reference="precomputed", block_size=40
                )
            )
        )
    other = train(tiny_sft_config(root, run_name="other_start", max_steps=3), SFTStage).run_dir
    with pytest.raises(UserError, match="weights_sha256.*--recompute_reference"):
        DPOStage(
            run_context(tiny_dpo_config(root, other, data_dir=str(data), reference="precomputed"))
        )
    config = tiny_dpo_config(
        root, other, data_dir=str(data), reference="precomputed", recompute_reference=True
    )
    DPOStage(run_context(config))  # replaced, then accepted
    stored = json.loads((data / "train" / IDENTITY_FILE).read_text())
    assert stored["checkpoint"].startswith(str(other))


def json_pairs(dpo_dir):
    """The tiny pairs again (a private copy of the data folder, since values get written in)."""
    from post_training_fixtures import tiny_pairs

    del dpo_dir
    return tiny_pairs()


def stop_at(step_to_stop: int):
    class StopAt(DPOStage):
        def train_micro_batch(self, step, micro_index):
            if step == step_to_stop and micro_index == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().train_micro_batch(step, micro_index)

    return StopAt


@pytest.mark.parametrize("reference", ["live", "precomputed"])
def test_resume_is_exact(root, start, tmp_path, reference):
    tokenizer_path, _, _ = tiny_inputs(root)
    data = write_dpo_folder(tmp_path / "dpo", tokenizer_path, json_pairs(None))
    options = dict(data_dir=str(data), reference=reference, pairs_per_step=4)
    straight = train(tiny_dpo_config(root, start, run_name=f"s_{reference}", **options), DPOStage)
    name = f"r_{reference}"
    first = train(tiny_dpo_config(root, start, run_name=name, **options), stop_at(2))
    assert first.stopped_by_signal == signal.SIGTERM and first.step == 3
    second = train(tiny_dpo_config(root, start, run_name=name, resume=True, **options), DPOStage)
    assert first.losses + second.losses == straight.losses
    a, b = load_model(straight.run_dir)[0].state_dict(), load_model(second.run_dir)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mfu_counts_the_live_reference_forward_pass(root, start, tmp_path):
    """A live reference adds one forward pass (a third of a training pass) per token: the
    engine's FLOPs per token, live over precomputed, match what torch's FLOP counter measures
    for one training micro-batch of each."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.device import setup_distributed
    from training.trainer import Trainer

    tokenizer_path, _, _ = tiny_inputs(root)
    data = write_dpo_folder(tmp_path / "dpo", tokenizer_path, json_pairs(None))
    flops, measured = {}, {}
    for reference in ("live", "precomputed"):
        config = tiny_dpo_config(
            root, start, run_name=f"mfu_{reference}", data_dir=str(data), reference=reference
        )
        trainer = Trainer(config, DPOStage, setup_distributed(config.device))
        trainer.log.close()
        flops[reference] = trainer.flops_per_token
        with FlopCounterMode(display=False) as counter:
            loss, _ = trainer.stage.loss(trainer.model, trainer.stage.train_micro_batch(0, 0))
            loss.backward()
        measured[reference] = counter.get_total_flops()
    assert flops["live"] / flops["precomputed"] == pytest.approx(
        measured["live"] / measured["precomputed"], rel=0.02
    )
    assert flops["live"] == pytest.approx(flops["precomputed"] * 4 / 3)


def test_two_gloo_processes_match_one_process_with_double_accumulation(root, start, tmp_path):
    """DDP under torchrun: rank 0 precomputes the reference log-probs while rank 1 waits, each
    rank takes its own micro-batch, and the losses are those of one process accumulating two."""
    tokenizer_path, _, _ = tiny_inputs(root)
    options = dict(reference="precomputed", pairs_per_step=4, max_steps=4)
    single = tiny_dpo_config(
        root,
        start,
        run_name="single",
        data_dir=str(write_dpo_folder(tmp_path / "single", tokenizer_path, json_pairs(None))),
        **options,
    )
    reference = train(single, DPOStage)
    ddp_data = write_dpo_folder(tmp_path / "ddp", tokenizer_path, json_pairs(None))
    ddp = tiny_dpo_config(root, start, run_name="ddp", data_dir=str(ddp_data), **options)
    completed = torchrun("post_training_dpo.py", ddp)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 process(es), 1 micro-batch(es)" in completed.stdout
    assert (ddp_data / "train" / VALUES_FILE).is_file()
    run_dir = root / "checkpoints" / "ddp"
    assert logged_scalars(run_dir) == pytest.approx(reference.losses, rel=1e-5)
    assert len(logged_scalars(run_dir, "rewards/accuracies")) == len(reference.losses)
    for tag in ("val/loss", "val/rewards/margins"):  # one evaluation path, split across ranks
        single_values = logged_scalars(reference.run_dir, tag)
        assert single_values and logged_scalars(run_dir, tag) == pytest.approx(
            single_values, rel=1e-5
        ), tag


def test_cli_logs_every_metric_and_their_validation_counterparts(root, start, capsys):
    config = tiny_dpo_config(root, start, run_name="cli", loss_type="robust", label_smoothing=0.1)
    argv = [f"--{k}={v}" for k, v in config.to_dict().items() if k != "model_overrides"]
    assert post_training_dpo.main(argv) == 0
    out = capsys.readouterr().out
    assert "reward accuracy" in out and "dpo pairs: train" in out
    pairs = len(load_pairs(open_split(Path(config.data_dir) / "train"), config.block_size, 1))
    epochs = config.max_steps * config.micro_batch_size / pairs  # one micro-batch per step
    assert f"{pairs:,} pairs -> read {epochs:.2f} times" in out, "the epoch report, in pairs"
    events = EventAccumulator(str(root / "checkpoints" / "cli" / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert events.Scalars("train/epoch")[-1].value == pytest.approx(epochs, rel=1e-6)
    assert {"train/loss", "val/loss", *METRICS, *(f"val/{m}" for m in METRICS)} <= scalars
    assert "val/ppl" not in scalars

    def values(tag):
        return [event.value for event in events.Scalars(tag)]

    for prefix in ("", "val/"):  # the values, not only the names
        chosen, rejected = values(f"{prefix}rewards/chosen"), values(f"{prefix}rewards/rejected")
        assert values(f"{prefix}rewards/margins") == pytest.approx(
            [c - r for c, r in zip(chosen, rejected)], abs=1e-5
        )
        assert all(0 <= a <= 1 for a in values(f"{prefix}rewards/accuracies"))
        assert all(
            logp < 0 for logp in values(f"{prefix}logps/chosen") + values(f"{prefix}logps/rejected")
        )
    assert f"loss {values('val/loss')[-1]:.4f}, reward accuracy" in out, "reports the last eval"
    assert any(tag.startswith("samples/answer_0") for tag in events.Tags()["tensors"])
    _, saved, _ = load_model(root / "checkpoints" / "cli")
    assert saved["stage"] == "dpo" and saved["train"]["loss_type"] == "robust"


def test_wrong_stage_folder_is_a_user_error(root, start):
    _, sft_dir, _ = tiny_inputs(root)
    with pytest.raises(UserError, match="holds sft data but this step needs dpo data.*--stage dpo"):
        train(tiny_dpo_config(root, start, run_name="bad", data_dir=str(sft_dir)), DPOStage)


def test_prompts_that_fill_the_context_and_identical_pairs(root, start, tmp_path):
    tokenizer_path, _, _ = tiny_inputs(root)
    long_prompt = [{"role": "user", "content": "Name a color of the sky. " * 20}]
    same = [{"role": "user", "content": "What do cats say?"}]
    data = write_dpo_folder(
        tmp_path / "bad", tokenizer_path, [(long_prompt, "Blue.", "Red."), (same, "Meow.", "Meow.")]
    )
    with pytest.raises(
        UserError, match="no usable preference pair.*prompt_fills_context': 1.*identical': 1"
    ):
        train(tiny_dpo_config(root, start, run_name="bad2", data_dir=str(data)), DPOStage)
    # Mixed with good pairs, the bad ones are skipped and counted.
    data = write_dpo_folder(
        tmp_path / "mixed",
        tokenizer_path,
        [(long_prompt, "Blue.", "Red."), (same, "Meow.", "Meow.")] + json_pairs(None),
    )
    stage = DPOStage(run_context(tiny_dpo_config(root, start, data_dir=str(data))))
    assert stage.train_pairs.stats["skipped_prompt_fills_context"] == 1
    assert stage.train_pairs.stats["skipped_identical"] == 1
    assert len(stage.train_pairs) == len(json_pairs(None))
    assert not np.isin(stage.train_pairs.pair_index, [0, 1]).any()


def test_bad_settings_are_user_errors(root, start):
    with pytest.raises(UserError, match="--init_from"):
        dataclasses.replace(tiny_dpo_config(root, start), init_from=None).check()
    with pytest.raises(UserError, match="label_smoothing"):
        tiny_dpo_config(root, start, label_smoothing=0.5).check()
    with pytest.raises(UserError, match="rpo_alpha"):
        tiny_dpo_config(root, start, rpo_alpha=-1.0).check()
    with pytest.raises(UserError, match="pairs_per_step"):
        tiny_dpo_config(root, start, pairs_per_step=3).check()
    with pytest.raises(UserError, match="disagree"):
        tiny_dpo_config(root, start, pairs_per_step=4, tokens_per_step=2 * 2 * 48 * 3).check()
    config = tiny_dpo_config(root, start, pairs_per_step=4)
    config.check()
    config.check()  # checking reads only: twice changes nothing
    assert config.micro_batches_per_step(world_size=1) == 2  # 4 pairs per step, 2 per batch
    assert config.tokens_per_step == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("reference", ["live", "precomputed"])
def test_gpu_bf16_compiled_dpo_starts_at_ln2_and_learns(root, start, tmp_path, reference):
    """The GPU path (bf16 autocast, torch.compile'd policy, eager reference) keeps policy ==
    reference at step 1 up to bf16 rounding, and the pairs are learned."""
    tokenizer_path, _, _ = tiny_inputs(root)
    data = write_dpo_folder(tmp_path / "dpo", tokenizer_path, json_pairs(None))
    config = tiny_dpo_config(
        root,
        start,
        run_name=f"gpu_{reference}",
        data_dir=str(data),
        reference=reference,
        device="cuda",
        precision="bf16",
        compile=True,
        max_steps=8,
    )
    result = train(config, DPOStage)
    assert result.losses[0] == pytest.approx(math.log(2), abs=2e-2)
    assert all(math.isfinite(loss) for loss in result.losses)
    assert result.losses[-1] < result.losses[0]
