"""evaluation/lm.py's scoring on requests of every shape: batched log-likelihoods against one
request at a time through the plain model, a shared context run once, lm-eval's left
truncation, is-greedy, and the encoding rules."""

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import build_checkpoint, build_tokenizer

from evaluation.lm import SimpleTransformerLM

BOS_ID = 0  # <|endoftext|>, our tokenizers' BOS


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    tokenizer = build_tokenizer(root / "tokenizer.json")
    _, run = build_checkpoint(root / "run", tokenizer, block_size=32)
    return SimpleTransformerLM.from_checkpoint(str(run), device="cpu")


def reference(lm, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """lm-eval's HF computation, one request alone: the last block_size + 1 tokens, less one."""
    tokens = (context + continuation)[-(lm.max_length + 1) :]
    targets = continuation[-lm.max_length :]  # all of it, unless longer than the window
    with torch.no_grad():
        logits = lm.model(torch.tensor([tokens[:-1]]))[0]  # [T, V]
    log_probs = F.log_softmax(logits[-len(targets) :].float(), dim=-1)
    target = torch.tensor(targets)
    picked = log_probs.gather(-1, target[:, None]).sum()
    return float(picked), bool((log_probs.argmax(-1) == target).all())


def requests_of_all_shapes() -> list[tuple[list[int], list[int]]]:
    """Shared contexts of several lengths (the BOS alone too) with choices of different lengths,
    two contexts with one continuation (Winogrande's shape), a context too long for the model's
    32 positions (cut on the left), one request alone (LAMBADA's), and a continuation longer
    than the whole window."""
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(6, 300, (n,), generator=g).tolist()

    requests = []
    for context_length, lengths in [
        (12, (3, 5, 1, 4)),
        (1, (2, 2)),
        (20, (7, 1, 3)),
        (5, (1,) * 5),
    ]:
        context = [BOS_ID, *ids(context_length - 1)]
        requests += [(context, ids(k)) for k in lengths]
    rest = ids(4)
    requests += [([BOS_ID, *ids(8)], rest), ([BOS_ID, *ids(10)], rest)]
    long_context = [BOS_ID, *ids(29)]
    requests += [(long_context, ids(6)), (long_context, ids(9))]
    requests += [([BOS_ID, *ids(14)], ids(2)), ([BOS_ID, *ids(3)], ids(40))]
    return requests


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64])
def test_batched_scores_equal_one_request_at_a_time(lm, batch_size, monkeypatch):
    monkeypatch.setattr(lm, "batch_size", batch_size)
    requests = requests_of_all_shapes()
    scores = lm._loglikelihood_tokens([(None, c, x) for c, x in requests])
    for (context, continuation), (loglikelihood, greedy) in zip(requests, scores):
        expected, expected_greedy = reference(lm, context, continuation)
        assert loglikelihood == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy


def test_a_shared_context_runs_once(lm, monkeypatch):
    """Four multiple-choice questions, 14 choices, in one batch: one pass over the contexts
    (a prefill) and one over all the choices."""
    passes, forward = [], lm.model.forward

    def counted(idx, **settings):
        passes.append(idx.shape)
        return forward(idx, **settings)

    monkeypatch.setattr(lm.model, "forward", counted)
    requests = requests_of_all_shapes()[:14]
    lm._loglikelihood_tokens([(None, c, x) for c, x in requests])
    assert passes == [torch.Size([4, 19]), torch.Size([14, 7])]  # [questions, longest context]


def test_greedy_continuation_is_flagged(lm):
    """A continuation that is the model's own argmax tokens is greedy; one other token is not."""
    context = [BOS_ID, 45, 78, 90, 12]
    tokens = list(context)
    with torch.no_grad():
        for _ in range(4):
            tokens.append(int(lm.model(torch.tensor([tokens]))[0, -1].argmax()))
    greedy = tokens[len(context) :]
    other = greedy[:-1] + [(greedy[-1] + 1) % 300]
    (ll_greedy, is_greedy), (ll_other, is_other) = lm._loglikelihood_tokens(
        [(None, context, greedy), (None, context, other)]
    )
    assert is_greedy and not is_other and ll_greedy > ll_other


def test_encoding_follows_lm_evals_hf_rules(lm):
    """`<|endoftext|>` in front unless already there; the whole text split after the context's
    ids; trailing spaces moved to the continuation; special tokens in a text matched."""
    assert lm.tok_encode("The fox")[0] == BOS_ID
    assert lm.tok_encode("<|endoftext|>The fox") == lm.tok_encode("The fox")
    assert lm.tok_encode("The fox", add_special_tokens=False) == lm.tok_encode("The fox")[1:]
    context, continuation = lm._encode_pair("The fox ran ", "home")
    assert context == lm.tok_encode("The fox ran")
    assert context + continuation == lm.tok_encode("The fox ran home")
    chat = lm.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert chat == "<|endoftext|><|user|>Hi<|end|><|assistant|>"
    assert lm.tok_encode(chat)[:2] == [BOS_ID, 3] and lm.tok_encode(chat)[-1] == 4
