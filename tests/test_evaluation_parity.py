"""Parity with lm-evaluation-harness's own Hugging Face model: on fixtures with the real datasets'
column layouts, our checkpoint through our LM and our task set-up (evaluation/lm.py, tasks.py)
gets the same responses per example (log-likelihoods and is-greedy, whole-text log-likelihoods,
generated texts), and so the same figures, as lm-eval's own entry point,
`lm_eval.evaluator.simple_evaluate(model="hf")` (float32), on the exported folder of the same
checkpoint: the six core tasks, openbookqa (a task our code never names), wikitext (perplexity,
in several windows), gsm8k (generate_until, greedy), few-shot, and chat.

No network: both read the fixture copies (dataset/evaluation/download_dataset.local_copies);
nothing else of ours runs on lm-eval's side.
"""

import logging

import pytest
import torch
from evaluation_fixtures import CORE, WIKITEXT_PAGE, all_texts, write_evaluation_data
from tiny_tokenizer import train_tiny_tokenizer
from tokenizers import Tokenizer

from dataset.evaluation.download_dataset import TASKS_DIR, local_copies
from evaluation.lm import SimpleTransformerLM
from evaluation.tasks import evaluate_tasks, load_tasks
from model.checkpoint import save_model_files
from model.config import from_preset
from model.export.hf import export
from model.transformer import Transformer

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's hf model needs it
BLOCK_SIZE = 128  # wikitext's page spans windows; few-shot contexts are cut on the left


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint, its export, and the fixture copies."""
    root = tmp_path_factory.mktemp("parity")
    tokenizer = train_tiny_tokenizer(root / "tokenizer.json", all_texts() * 5, 400)
    vocab_size = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    torch.manual_seed(0)
    model = Transformer(from_preset("debug", vocab_size=vocab_size, block_size=BLOCK_SIZE)).eval()
    with torch.no_grad():  # sharper preferences: no choice wins by a rounding error
        model.lm_head.weight.mul_(8)
    config = {"stage": "pre_training", "step": 1, "tokenizer": {"sha256": ""}}
    save_model_files(model, root / "run" / "step_0000001", config, tokenizer)
    (root / "run" / "latest").write_text("step_0000001\n")
    export(root / "run", root / "hf")
    return {"run": root / "run", "hf": root / "hf", "data": write_evaluation_data(root / "data")}


@pytest.fixture(scope="module")
def ours(world):
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    # batch 3: several contexts per batch, and choices of one context split across batches
    return SimpleTransformerLM.from_checkpoint(str(world["run"]), device="cpu", batch_size=3)


def scores(world, lm, names, generation=None, **settings) -> dict:
    """Our side: our task set-up (load_tasks, evaluate_tasks) and our LM."""
    tasks, _ = load_tasks(list(names), world["data"])
    for task in tasks["tasks"].values():
        if generation and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=generation, update=True)
    return evaluate_tasks(lm, tasks, **settings)


def lm_eval_scores(world, names, generation=None, num_fewshot=None, chat=False, limit=None):
    """lm-eval's side: its own simple_evaluate with its hf model on the export."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    with local_copies(world["data"]):
        return simple_evaluate(
            model="hf",
            model_args={"pretrained": str(world["hf"]), "dtype": "float32"},
            tasks=list(names),
            num_fewshot=num_fewshot,
            batch_size=4,
            device="cpu",
            limit=limit,
            bootstrap_iters=1000,
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
            gen_kwargs=generation,
            task_manager=TaskManager(include_path=str(TASKS_DIR)),
        )


def assert_same(ours: dict, theirs: dict) -> None:
    assert set(ours["results"]) == set(theirs["results"])
    for task, samples in ours["samples"].items():
        pairs = zip(sorted(samples, key=doc_id), sorted(theirs["samples"][task], key=doc_id))
        for mine, their in pairs:
            for a, b in zip(mine["resps"], their["resps"]):
                if isinstance(b[0], str):  # a generated text
                    assert a == b, f"{task} doc {mine['doc_id']}"
                else:  # (log-likelihood, is greedy), or a text's log-likelihood
                    a, b = (x[0] if isinstance(x[0], tuple) else (x[0],) for x in (a, b))
                    assert a[0] == pytest.approx(b[0], rel=1e-4, abs=1e-3), (
                        f"{task} doc {mine['doc_id']}"
                    )
                    assert a[1:] == b[1:], f"{task} doc {mine['doc_id']}: is_greedy"
        for key, value in theirs["results"][task].items():
            if isinstance(value, float) and "_stderr" not in key:
                assert ours["results"][task][key] == pytest.approx(value, rel=1e-4), (task, key)


def doc_id(sample: dict) -> tuple:
    return sample["doc_id"], sample["filter"]


def test_zero_shot_tasks_match_lm_eval(world, ours):
    names = (*CORE, "openbookqa", "wikitext")
    results = scores(world, ours, names)
    assert_same(results, lm_eval_scores(world, names))
    assert len(ours.tok_encode(WIKITEXT_PAGE)) > BLOCK_SIZE  # several rolling windows
    assert set(results["results"]["wikitext"]) >= {"word_perplexity,none", "bits_per_byte,none"}


def test_few_shot_matches_lm_eval(world, ours):
    """Two solved examples, drawn with lm-eval's seed and sampler; long ones cut on the left."""
    names = ("hellaswag", "arc_easy", "winogrande", "lambada_openai", "openbookqa")
    theirs = lm_eval_scores(world, names, num_fewshot=2)
    assert_same(scores(world, ours, names, num_fewshot=2), theirs)


def test_chat_matches_lm_eval_apply_chat_template(world, ours):
    """Our chat renderer (tokenizer/encoding.py) and the export's chat template agree, and so do
    the requests of lm-eval's --apply_chat_template (few-shot examples as turns)."""
    names = ("arc_easy", "piqa", "winogrande", "arc_easy_letters", "sample_world")
    settings = {"num_fewshot": 1, "chat": True, "limit": 6}
    assert_same(scores(world, ours, names, **settings), lm_eval_scores(world, names, **settings))


@pytest.mark.parametrize("until", [None, ["at"]])
def test_gsm8k_generation_matches_lm_eval(world, ours, until):
    """Greedy generation until gsm8k's stop strings (or a stop string that shows up often),
    within max_gen_toks, with the prompt cut on the left to leave room for them."""
    generation = {"max_gen_toks": 24, **({"until": until} if until else {})}
    mine = scores(world, ours, ["gsm8k"], generation, num_fewshot=2)
    theirs = lm_eval_scores(world, ["gsm8k"], generation, num_fewshot=2)
    assert_same(mine, theirs)
    texts = [sample["resps"][0][0] for sample in mine["samples"]["gsm8k"]]
    assert any(texts), texts
    if until:
        assert all("at" not in text for text in texts)
    for name in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert mine["results"]["gsm8k"][name] == theirs["results"]["gsm8k"][name]


def test_a_broken_encoding_rule_is_caught(world, ours, monkeypatch):
    """Each half of lm-eval's HF rule matters: without `<|endoftext|>` in front of a plain text,
    or with the chat template's special tokens read as plain text, parity breaks."""
    plain = lm_eval_scores(world, ["piqa"])
    chat = lm_eval_scores(world, ["arc_easy"], chat=True)
    encode = SimpleTransformerLM.tok_encode

    def without_bos(self, text, **settings):
        return encode(self, text, add_special_tokens=False)

    monkeypatch.setattr(SimpleTransformerLM, "tok_encode", without_bos)
    with pytest.raises(AssertionError):
        assert_same(scores(world, ours, ["piqa"]), plain)
    monkeypatch.undo()
    monkeypatch.setattr(ours.tokenizer, "encode_with_special_tokens", ours.tokenizer.encode_text)
    with pytest.raises(AssertionError):
        assert_same(scores(world, ours, ["arc_easy"], chat=True), chat)


def test_our_task_set_up_is_checked_too(world, ours, monkeypatch):
    """lm-eval's side runs none of our task code: a fault in it (a wrong few-shot seed here)
    shows as a difference, not on both sides alike."""
    names = ("hellaswag", "arc_easy")
    theirs = lm_eval_scores(world, names, num_fewshot=2)
    with pytest.raises(AssertionError):
        assert_same(scores(world, ours, names, num_fewshot=2, fewshot_seed=7), theirs)
