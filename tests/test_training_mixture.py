"""Weighted mixtures of tokenized corpora (--data_dir=a:0.8,b:0.2) and the epoch report.

The two corpora are written with disjoint token ids (a: 10..99, b: 100..199), so every window
and packed row tells which corpus it came from.
"""

import math
import signal

import numpy as np
import pytest
import torch
from post_training_fixtures import run_context, tiny_sft_config
from training_fixtures import logged_scalars, make_tokenizer, tiny_config, torchrun

from common.atomic import sha256_file
from common.errors import UserError
from tokenizer.tokenized_data import SplitWriter
from training.config import parse_config
from training.data import PERIOD, Interleave, parse_data_dirs, slot_counts
from training.pretraining_stage import PretrainingStage
from training.sft_stage import SFTStage
from training.trainer import train, validation_scalars

RANGES = {"a": (10, 100), "b": (100, 200)}


def write_corpus(folder, tokenizer_path, ids, stage="pre_training", docs=None, sha256=None):
    """train/ and validation/ of documents drawn from token ids [low, high)."""
    rng = np.random.default_rng(ids[0])
    vocab = 300
    for split, count in (docs or {"train": 300, "validation": 30}).items():
        writer = SplitWriter(folder / split, stage, vocab)
        documents = [
            [0, *rng.integers(*ids, size=int(rng.integers(5, 30))).tolist()] for _ in range(count)
        ]
        if stage == "sft":
            writer.add_documents(documents, [[0] + [1] * (len(d) - 1) for d in documents])
        else:
            writer.add_documents(documents)
        writer.finish(sha256 or sha256_file(tokenizer_path))
    return folder


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixture")
    tokenizer = make_tokenizer(root / "tokenizer.json")
    folders = {
        name: write_corpus(root / name / "tokenized", tokenizer, ids)
        for name, ids in RANGES.items()
    }
    return tokenizer, folders


def corpus_of(window: torch.Tensor) -> set[str]:
    ids = window[window > 0]
    return {name for name, (low, high) in RANGES.items() if ((ids >= low) & (ids < high)).any()}


def mixture_config(tmp_path, corpora, weights=(0.75, 0.25), **overrides):
    tokenizer, folders = corpora
    data_dir = ",".join(f"{folders[n]}:{w}" for n, w in zip(folders, weights))
    return tiny_config(tmp_path, tokenizer, data_dir, **overrides)


# ---------------------------------------------------------------- parsing the flag


@pytest.mark.parametrize(
    "data_dir, message",
    [
        ("a:0.8,b:abc", "the weight 'abc' of b is not a positive number"),
        ("a:0.8,b:0", "the weight '0' of b is not a positive number"),
        ("a:0.8,b:-0.2", "the weight '-0.2' of b is not a positive number"),
        ("a:0.8,b:nan", "the weight 'nan' of b is not a positive number"),
        ("a:0.8,b", "b has no weight"),
        ("a:0.5,./a:0.5", "names the same folder twice \\(a and ./a\\)"),
        ("a:0.5,", "has an empty entry"),
    ],
)
def test_bad_mixtures_are_one_line_errors_at_parse_time(tmp_path, corpora, data_dir, message):
    config = tiny_config(tmp_path, corpora[0], corpora[1]["a"])
    with pytest.raises(UserError, match=message):
        parse_config(config, [f"--data_dir={data_dir}"])


def test_weights_are_scaled_and_corpora_named_after_their_folders():
    specs = parse_data_dirs("data/fineweb/tokenized:3,data/pre_training/tokenized:1,x/y:4")
    assert [s.weight for s in specs] == [0.375, 0.125, 0.5]
    assert [s.name for s in specs] == ["fineweb", "pre_training", "y"]
    (single,) = parse_data_dirs("data/pre_training/tokenized")
    assert single.weight == 1.0


@pytest.mark.parametrize("weights", [[0.6, 0.3, 0.1], [0.37, 0.21, 0.17, 0.15, 0.1]])
def test_interleave_holds_the_weights_in_every_run_of_slots_and_ranks_count_earlier_ones(
    weights,
):
    interleave = Interleave(weights)
    counts = slot_counts(weights, PERIOD)
    assert counts.sum() == PERIOD and np.abs(counts - np.asarray(weights) * PERIOD).max() < 1
    slots = np.arange(3 * PERIOD + 17)
    corpus, rank = interleave.corpus(slots), interleave.rank(slots)
    assert np.bincount(corpus[: 2 * PERIOD]).tolist() == (2 * counts).tolist()
    for start, length in ((0, 8), (123, 32), (977, 64), (1500, 512)):  # a micro-batch, a step
        held = np.bincount(corpus[start : start + length], minlength=len(weights))
        assert np.abs(held - length * counts / PERIOD).max() <= 2, (start, length)
    seen = [0] * len(weights)
    for k, r in zip(corpus.tolist(), rank.tolist()):  # brute force: the r-th slot of corpus k
        assert r == seen[k]
        seen[k] += 1
    assert slot_counts([0.9999, 0.0001], PERIOD).tolist() == [999, 1], "no corpus left out"


def test_a_corpus_made_with_another_tokenizer_is_refused_naming_it(tmp_path, corpora):
    tokenizer, folders = corpora
    other = write_corpus(tmp_path / "other" / "tokenized", tokenizer, (10, 50), sha256="f" * 64)
    config = tiny_config(tmp_path, tokenizer, f"{folders['a']}:0.5,{other}:0.5")
    with pytest.raises(UserError, match=f"{other}/train was tokenized with a different tokenizer"):
        train(config, PretrainingStage)


# ---------------------------------------------------------------- pre-training


def test_each_step_draws_its_windows_by_weight_as_a_pure_function(tmp_path, corpora):
    config = mixture_config(tmp_path, corpora, tokens_per_step=4 * 4 * 32, max_steps=2)
    seen = {}

    class Recording(PretrainingStage):
        def train_micro_batch(self, step, micro_index):
            batch = super().train_micro_batch(step, micro_index)
            again = super().train_micro_batch(step, micro_index)
            assert torch.equal(batch["inputs"], again["inputs"]), "a pure function"
            seen[step, micro_index] = batch["inputs"]
            return batch

    train(config, Recording)
    windows = [window for inputs in seen.values() for window in inputs]
    assert all(len(corpus_of(w)) == 1 for w in windows), "a window comes from one corpus"
    from_a = sum(corpus_of(w) == {"a"} for w in windows)
    assert len(windows) == 32 and abs(from_a - 24) <= 1, "3/4 of the 32 windows of two steps"


def test_a_mixture_resumes_exactly_and_reports_validation_per_corpus(tmp_path, corpora):
    # 0.7/0.3 repeats every 10 slots: a micro-batch of 4 sees different mixes at each offset
    common = dict(max_steps=8, tokens_per_step=2 * 4 * 32)

    def config(**overrides):
        return mixture_config(tmp_path, corpora, (0.7, 0.3), **common, **overrides)

    straight = train(config(run_name="straight"), PretrainingStage)

    class StopAt2(PretrainingStage):
        def train_micro_batch(self, step, micro_index):
            if step == 2 and micro_index == 0:
                signal.raise_signal(signal.SIGTERM)
            return super().train_micro_batch(step, micro_index)

    first = train(config(run_name="stopped"), StopAt2)
    second = train(config(run_name="stopped", resume=True), PretrainingStage)
    assert first.losses + second.losses == straight.losses  # bitwise on CPU

    metrics = straight.val_metrics
    for name in ("a", "b"):
        assert {f"loss/{name}", f"bpb/{name}"} <= set(metrics)
        assert logged_scalars(straight.run_dir, f"val/loss/{name}")[-1] == pytest.approx(
            metrics[f"loss/{name}"], rel=1e-6
        )
    # each corpus's figure is that corpus's own validation loss, measured independently
    tokenizer, folders = corpora
    for name, folder in folders.items():
        alone = tiny_config(tmp_path, tokenizer, folder, **common)
        stage = PretrainingStage(run_context(alone))
        scalars = validation_scalars(
            stage, straight.model, stage.validation_batches(), stage.context
        )
        assert metrics[f"loss/{name}"] == pytest.approx(scalars["loss"], rel=1e-5)
        assert metrics[f"bpb/{name}"] == pytest.approx(scalars["bpb"], rel=1e-5)
    assert (
        min(metrics["loss/a"], metrics["loss/b"])
        < metrics["loss"]
        < max(metrics["loss/a"], metrics["loss/b"])
    )


def test_the_epoch_report_and_train_epoch_follow_tokens_per_step_and_weights(
    tmp_path, corpora, capsys
):
    config = mixture_config(
        tmp_path,
        corpora,
        (0.9, 0.1),
        tokens_per_step=2 * 4 * 32,
        max_steps=60,
        eval_interval=60,
        checkpoint_interval=60,
    )
    result = train(config, PretrainingStage)
    out = capsys.readouterr().out
    sizes = {n: len(result.stage.train_windows[i].tokens) for i, n in enumerate("ab")}
    read = 60 * 256
    assert f"data: 60 steps x 256 tokens = {read:,}" in out
    epochs_a = read * 0.9 / sizes["a"]
    assert f"weight 0.90, {sizes['a']:,} tokens -> read {epochs_a:.2f} times" in out
    assert (f"warning: the run reads {corpora[1]['a']} {epochs_a:.1f} times" in out) == (
        epochs_a > 4
    )
    logged = logged_scalars(result.run_dir, "train/epoch/a")
    assert logged[-1] == pytest.approx(epochs_a, rel=1e-6)
    assert logged_scalars(result.run_dir, "train/epoch")[9] == pytest.approx(
        10 * 256 * 0.9 / sizes["a"], rel=1e-6
    ), "train/epoch: the most-read corpus, at step 10"


def test_one_corpus_warns_above_four_epochs(tmp_path, corpora, capsys):
    tokenizer, folders = corpora
    config = tiny_config(tmp_path, tokenizer, folders["b"], max_steps=400, tokens_per_step=0)
    stage = PretrainingStage(run_context(config))  # prints the report as a run starts
    out = capsys.readouterr().out
    epochs = 400 * 4 * 32 / len(stage.train_windows[0].tokens)  # one micro-batch per step
    assert epochs > 4 and f"tokens -> read {epochs:.2f} times" in out
    assert f"warning: the run reads {folders['b']} {epochs:.1f} times (more than 4 epochs" in out
    assert stage.epochs.scalars(400) == {"train/epoch": pytest.approx(epochs)}


# ---------------------------------------------------------------- SFT


@pytest.fixture(scope="module")
def sft_corpora(tmp_path_factory, corpora):
    tokenizer, _ = corpora
    root = tmp_path_factory.mktemp("sft_mixture")
    docs = {"train": 40, "validation": 8}
    return tokenizer, {
        name: write_corpus(root / name / "tokenized", tokenizer, ids, "sft", docs)
        for name, ids in RANGES.items()
    }


def test_sft_mixture_reads_each_corpus_row_once_per_epoch_across_steps(tmp_path, sft_corpora):
    tokenizer, folders = sft_corpora
    data_dir = f"{folders['a']}:0.5,{folders['b']}:0.5"
    config = tiny_sft_config(
        tmp_path,
        data_dir=data_dir,
        tokenizer_path=str(tokenizer),
        block_size=32,
        micro_batch_size=4,
        tokens_per_step=2 * 4 * 32,
        max_steps=3,
    )
    seen = []

    class Recording(SFTStage):
        def train_micro_batch(self, step, micro_index):
            batch = super().train_micro_batch(step, micro_index)
            seen.extend(batch["inputs"])
            return batch

    result = train(config, Recording)
    stage = result.stage
    rows_a = [corpus_of(row) for row in seen].count({"a"})
    assert rows_a == len(seen) // 2 and all(len(corpus_of(row)) == 1 for row in seen)
    epoch_a = [
        tuple(stage.train_data[0].row(r)[0][:-1].tolist())
        for r in range(stage.train_data[0].rows_in_epoch(0))
    ]
    got_a = [tuple(row.tolist()) for row in seen if corpus_of(row) == {"a"}]
    assert got_a == epoch_a[: len(got_a)], "corpus a's rows in order, none twice"
    assert {"loss/a", "loss/b", "bpb/a", "bpb/b"} <= set(result.val_metrics)


# ---------------------------------------------------------------- DDP


def test_two_gloo_processes_read_the_mixture_like_one_with_double_accumulation(tmp_path, corpora):
    common = dict(max_steps=4, tokens_per_step=256, eval_interval=2, checkpoint_interval=2)
    reference = train(
        mixture_config(tmp_path, corpora, run_name="single", **common), PretrainingStage
    )
    completed = torchrun(
        "pre_training.py", mixture_config(tmp_path, corpora, run_name="ddp", **common)
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = tmp_path / "checkpoints" / "ddp"
    assert logged_scalars(run_dir) == pytest.approx(reference.losses, rel=1e-5)
    for tag in ("val/loss/a", "val/loss/b", "val/bpb/b"):
        assert logged_scalars(run_dir, tag) == pytest.approx(
            logged_scalars(reference.run_dir, tag), rel=1e-5
        ), tag
    assert not math.isnan(reference.val_metrics["loss/b"])
