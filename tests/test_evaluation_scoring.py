"""evaluation/scoring.py: the batched log-likelihoods against a one-request-at-a-time reference,
the shared-context path against the row path, lm-eval's left truncation, and is_greedy."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import build_checkpoint, build_tokenizer

from evaluation.models import load_checkpoint_model
from evaluation.scoring import score_pairs


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    tokenizer = build_tokenizer(root / "tokenizer.json")
    _, run = build_checkpoint(root / "run", tokenizer, block_size=32)
    return load_checkpoint_model(str(run), torch.device("cpu"), bf16=False)


def reference(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """lm-eval's computation, one request alone: the last block_size + 1 tokens, less one."""
    tokens = (context + continuation)[-(model.max_length + 1) :]
    targets = continuation[-model.max_length :]  # all of it, unless longer than the context
    with torch.no_grad():
        logits = model.model(torch.tensor([tokens[:-1]]))[0]  # [T, V]
    log_probs = F.log_softmax(logits[-len(targets) :].float(), dim=-1)
    target = torch.tensor(targets)
    picked = log_probs.gather(-1, target[:, None]).sum()
    return float(picked), bool((log_probs.argmax(-1) == target).all())


def examples_of_all_shapes() -> list[list[tuple[list[int], list[int]]]]:
    """Shared contexts of several lengths (the BOS alone too), choices of different lengths,
    an example whose choices have different contexts (Winogrande's shape), one too long for
    the model's 32 positions (left-truncated), a single request (LAMBADA's shape), and a
    continuation longer than the whole context window."""
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return [0] + torch.randint(6, 300, (n - 1,), generator=g).tolist() if n else []

    def tail(n):
        return torch.randint(6, 300, (n,), generator=g).tolist()

    shared = []
    for context_length, lengths in [
        (12, (3, 5, 1, 4)),
        (1, (2, 2)),
        (20, (7, 1, 3)),
        (5, (1,) * 5),
    ]:
        context = ids(context_length)
        shared.append([(context, tail(k)) for k in lengths])
    different_contexts = [[(ids(9), tail(4)), (ids(11), tail(4))]]
    long_context = ids(30)
    too_long = [[(long_context, tail(6)), (long_context, tail(9))]]
    single = [[(ids(15), tail(2))]]
    longer_than_the_context = [[(ids(4), tail(40))]]  # only its last 32 tokens can be scored
    return shared + different_contexts + too_long + single + longer_than_the_context


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_batched_scores_equal_one_request_at_a_time(scored, batch_size):
    examples = examples_of_all_shapes()
    done = []
    scores = score_pairs(scored, examples, batch_size, on_example_done=done.append)
    assert sum(done) == len(examples)  # every example reported finished once
    for pairs, example_scores in zip(examples, scores):
        for (context, continuation), score in zip(pairs, example_scores):
            ll, greedy = reference(scored, context, continuation)
            assert score.loglikelihood == pytest.approx(ll, abs=1e-4)
            assert score.greedy == greedy


def test_shared_context_path_equals_the_row_path(scored, monkeypatch):
    examples = examples_of_all_shapes()
    shared = score_pairs(scored, examples, batch_size=7)  # batches mix context lengths
    monkeypatch.setattr(scored, "prefix_cache", False)
    rows = score_pairs(scored, examples, batch_size=7)
    for a, b in zip(shared, rows):
        assert [s.loglikelihood for s in a] == pytest.approx([s.loglikelihood for s in b], abs=1e-4)
        assert [s.greedy for s in a] == [s.greedy for s in b]


def test_the_shared_path_runs_the_context_once(scored, monkeypatch):
    """One prefill for a batch of examples, one continuation pass for all their choices."""
    calls = {"prefill": 0, "continue": 0, "rows": 0}
    for name, key in (("prefill", "prefill"), ("continue_from", "continue"), ("logits", "rows")):
        original = getattr(scored, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(scored, name, counted)
    examples = examples_of_all_shapes()[:4]  # the four shared-context examples, 14 choices
    score_pairs(scored, examples, batch_size=64)
    assert calls == {"prefill": 1, "continue": 1, "rows": 0}


def test_greedy_continuation_is_flagged(scored):
    """A continuation that is the model's own argmax tokens is greedy; one other token is not."""
    context = [0, 45, 78, 90, 12]
    tokens = list(context)
    with torch.no_grad():
        for _ in range(4):
            tokens.append(int(scored.model(torch.tensor([tokens]))[0, -1].argmax()))
    greedy = tokens[len(context) :]
    other = greedy[:-1] + [(greedy[-1] + 1) % 300]
    (scores,) = score_pairs(scored, [[(context, greedy), (context, other)]], batch_size=8)
    assert scores[0].greedy and not scores[1].greedy
    assert scores[0].loglikelihood > scores[1].loglikelihood


def test_tokenization_moves_trailing_spaces_and_splits_the_whole(scored):
    """lm-eval's _encode_pair on our tokenizer: the context's trailing space moves to the
    continuation; the continuation's ids are those of the whole text after the context's."""
    (context, continuation), = scored.encode_pairs([("The fox ran ", "home")])  # fmt: skip
    assert context == scored.encode(["The fox ran"])[0]
    assert context + continuation == scored.encode(["The fox ran home"])[0]
    (empty_context, ids), = scored.encode_pairs([("", " home")])  # fmt: skip
    assert empty_context == [0] and ids == scored.encode_plain([" home"])[0]


def test_a_step_folder_is_named_with_its_run(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tokenizer.json")
    _, run = build_checkpoint(tmp_path / "my_run", tokenizer)
    model = load_checkpoint_model(str(Path(run) / "step_0000001"), torch.device("cpu"), False)
    assert model.name == "my_run/step_0000001" and model.stage == "pre_training"
