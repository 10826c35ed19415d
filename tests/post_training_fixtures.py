"""Shared helpers for the SFT and DPO tests: tiny tokenizers and tokenized folders built in-test.

Plain functions (not pytest fixtures), so test files import them without fixture-shadowing
lint noise; the expensive sample pipeline is cached per process in `sample_pipeline()` and its
checkpoint functions, and built in a second process while other tests run when conftest.py
starts `build_in_background()`.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiny_tokenizer
import torch
from tokenizers import Tokenizer

from common.atomic import sha256_file
from tokenizer.encoding import load_tokenizer
from tokenizer.tokenized_data import SplitWriter

CONVERSATIONS = [
    [
        {"role": "user", "content": "Name a color of the sky."},
        {"role": "assistant", "content": "Blue."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What do cats say?"},
        {"role": "assistant", "content": "Meow, mostly."},
        {"role": "user", "content": "And dogs?"},
        {"role": "assistant", "content": "Woof."},
    ],
    [
        {"role": "user", "content": "Write a short story about a dog named Max."},
        {"role": "assistant", "content": "Max ran through the forest and found a stick."},
    ],
]


def train_tiny_tokenizer(path: Path, vocab_size: int = 300) -> Tokenizer:
    """A byte-level BPE tokenizer.json with our special tokens at ids 0..5."""
    texts = [m["content"] for c in CONVERSATIONS for m in c] * 20
    return load_tokenizer(tiny_tokenizer.train_tiny_tokenizer(path, texts, vocab_size))


def write_sft_folder(out: Path, tokenizer_path: Path, conversations=None, splits=None) -> Path:
    """An sft tokenized folder whose splits all hold `conversations`."""
    tokenizer = load_tokenizer(tokenizer_path)
    conversations = conversations or CONVERSATIONS
    for split in splits or ("train", "validation", "test"):
        writer = SplitWriter(out / split, "sft", tokenizer.get_vocab_size())
        encoded = [tokenizer.conversation(c) for c in conversations]
        writer.add_documents([ids for ids, _ in encoded], [mask for _, mask in encoded])
        writer.finish(sha256_file(tokenizer_path))
    return out


def write_dpo_folder(out: Path, tokenizer_path: Path, pairs, splits=None) -> Path:
    """A dpo tokenized folder from (prompt messages, chosen text, rejected text) triples."""
    tokenizer = load_tokenizer(tokenizer_path)
    for split in splits or ("train", "validation", "test"):
        writer = SplitWriter(out / split, "dpo", tokenizer.get_vocab_size())
        writer.add_pairs(
            [
                (
                    tokenizer.prompt(prompt),
                    tokenizer.reply([], chosen),
                    tokenizer.reply([], rejected),
                )
                for prompt, chosen, rejected in pairs
            ]
        )
        writer.finish(sha256_file(tokenizer_path))
    return out


# ---------------------------------------------------------------------------------------------
# The real sample pipeline: sample world -> tokenizer -> tokenized data -> pre-training -> SFT ->
# DPO, at a size a CPU runs in a minute or two. Built once per test process, on first use.
# ---------------------------------------------------------------------------------------------

PIPELINE_SEED = 0
VOCAB_SIZE = 1024
BLOCK_SIZE = 192
MODEL = "--model_overrides=n_layer=2,n_embd=96,n_head=4,n_kv_head=2"
# AdamW (and pre-training's cosine schedule, below), as when the tests' thresholds were set
# (benchmarks/post_training_optimizer.py runs the pipeline with Muon); pinned so that a
# script's CONFIG default does not change what the tests see.
ENGINE_FLAGS = [
    "--compile=false",
    "--device=cpu",
    "--log_interval=10",
    "--keep_last=1",
    "--optimizer=adamw",
    "--eval_tasks=",
]
PRETRAIN_STEPS = 200
SFT_STEPS = 300  # name/place copying emerges between ~200 and ~300 steps
SFT_LEARNING_RATE = 3e-3
DPO_PAIRS = 2000  # train pairs; the held-out splits get 100 each
DPO_STEPS = 200  # 1,600 pairs: most of one epoch
DPO_LEARNING_RATE = 3e-4  # 1e-4 learns the pairs too, but moves sampled answers less
DPO_RPO_ALPHA = 1.0  # without it, answers got worse as the chosen log-probs fell with the rest

_cache: dict = {}
REPO = Path(__file__).resolve().parents[1]
USES_PIPELINE = re.compile(
    r"\b(sample_pipeline|pretrained_checkpoint|sft_checkpoint|dpo_checkpoint)\("
)


@dataclass
class SamplePipeline:
    root: Path
    tokenizer: Path
    raw: dict  # "pre" | "sft" | "dpo" -> raw DatasetDict folder
    tokenized: dict  # same keys -> tokenized folder
    checkpoints: Path


def sample_pipeline() -> SamplePipeline:
    """Sample data and tokenizer, tokenized for all three stages (cached per process)."""
    wait_for_background_build()
    if "pipeline" in _cache:
        return _cache["pipeline"]
    from dataset.post_training.dpo import download_dataset as dpo_download
    from dataset.post_training.sft import download_dataset as sft_download
    from dataset.pre_training import download_dataset as pre_download
    from tokenizer import tokenize_dataset
    from tokenizer import train as tokenizer_train

    root = _root()
    seed = ["--seed", str(PIPELINE_SEED)]
    raw = {name: root / f"raw_{name}" for name in ("pre", "sft", "dpo")}
    pre_download.main(
        ["--output-dir", str(raw["pre"]), "--source", "sample", "--sample-size-mb", "1", *seed]
    )
    sft_download.main(
        ["--output-dir", str(raw["sft"]), "--source", "sample", "--sample-size", "2000", *seed]
    )
    dpo_download.main(
        [
            "--output-dir",
            str(raw["dpo"]),
            "--source",
            "sample",
            "--sample-size",
            str(DPO_PAIRS),
            *seed,
        ]
    )
    tokenizer = root / "tokenizer.json"
    tokenizer_train.main(
        [
            "--dataset-dir",
            str(raw["pre"]),
            "--output-path",
            str(tokenizer),
            "--vocab-size",
            str(VOCAB_SIZE),
        ]
    )
    tokenized = {name: root / f"tokens_{name}" for name in raw}
    for name, stage in (("pre", "pre_training"), ("sft", "sft"), ("dpo", "dpo")):
        post = ["--max-length", str(BLOCK_SIZE + 1)]
        tokenize_dataset.main(
            [
                "--dataset-dir",
                str(raw[name]),
                "--tokenizer-path",
                str(tokenizer),
                "--output-dir",
                str(tokenized[name]),
                "--stage",
                stage,
                "--num-proc",
                "1",
            ]
            + ([] if name == "pre" else post)
        )
    pipeline = SamplePipeline(root, tokenizer, raw, tokenized, root / "checkpoints")
    _cache["pipeline"] = pipeline
    return pipeline


def _root() -> Path:
    """The folder everything of the pipeline goes into (deleted at exit)."""
    if "root" not in _cache:
        _cache["root"] = Path(tempfile.mkdtemp(prefix="post_training_pipeline_"))
        atexit.register(shutil.rmtree, _cache["root"], True)
    return _cache["root"]


def _run_name(kind: str, default: bool) -> str:
    """The default run of each stage has a fixed name (what the background build makes)."""
    return kind if default else f"{kind}{len(_cache)}"


def _common_flags(pipeline: SamplePipeline, run_name: str) -> list[str]:
    return [
        f"--tokenizer_path={pipeline.tokenizer}",
        f"--checkpoint_dir={pipeline.checkpoints}",
        f"--run_name={run_name}",
        f"--block_size={BLOCK_SIZE}",
        *ENGINE_FLAGS,
    ]


def _run(script, argv: list[str]) -> None:
    code = script.main(argv)
    assert code == 0, f"{script.__name__} exited with {code}"


def pretrained_checkpoint(*extra: str) -> Path:
    """The pre-trained model (extra flags change the run; each variant runs once)."""
    wait_for_background_build()
    key = ("pre", extra)
    if key not in _cache:
        import pre_training

        pipeline = sample_pipeline()
        run_name = _run_name("pre", not extra)
        _run(
            pre_training,
            [
                f"--data_dir={pipeline.tokenized['pre']}",
                *_common_flags(pipeline, run_name),
                "--model_preset=debug",
                MODEL,
                "--micro_batch_size=16",
                "--tokens_per_step=0",
                f"--max_steps={PRETRAIN_STEPS}",
                "--warmup_steps=20",
                "--learning_rate=3e-3",
                "--schedule=cosine",
                "--min_lr=3e-4",
                f"--eval_interval={PRETRAIN_STEPS}",
                "--eval_batches=2",
                f"--checkpoint_interval={PRETRAIN_STEPS}",
                "--sample_max_new_tokens=0",
                *extra,
            ],
        )
        _cache[key] = pipeline.checkpoints / run_name
    return _cache[key]


def sft_checkpoint(*extra: str, init: Path | None = None) -> Path:
    """SFT from `init` (default: pretrained_checkpoint()); extra flags change the run."""
    default = not extra and init is None
    init = init or pretrained_checkpoint()
    key = ("sft", extra, init)
    if key not in _cache:
        import post_training_sft

        pipeline = sample_pipeline()
        run_name = _run_name("sft", default)
        _run(
            post_training_sft,
            [
                f"--data_dir={pipeline.tokenized['sft']}",
                *_common_flags(pipeline, run_name),
                f"--init_from={init}",
                "--micro_batch_size=16",
                "--tokens_per_step=0",
                f"--max_steps={SFT_STEPS}",
                "--warmup_steps=10",
                f"--learning_rate={SFT_LEARNING_RATE}",
                f"--min_lr={SFT_LEARNING_RATE / 10}",
                f"--eval_interval={SFT_STEPS}",
                "--eval_batches=2",
                f"--checkpoint_interval={SFT_STEPS}",
                "--sample_max_new_tokens=0",
                *extra,
            ],
        )
        _cache[key] = pipeline.checkpoints / run_name
    return _cache[key]


def dpo_checkpoint(*extra: str, init: Path | None = None) -> Path:
    """A DPO run from `init` (default: sft_checkpoint()); extra flags change it; each variant
    runs once."""
    default = not extra and init is None
    init = init or sft_checkpoint()
    key = ("dpo", extra, init)
    if key not in _cache:
        import post_training_dpo

        pipeline = sample_pipeline()
        run_name = _run_name("dpo", default)
        _run(
            post_training_dpo,
            [
                f"--data_dir={pipeline.tokenized['dpo']}",
                *_common_flags(pipeline, run_name),
                f"--init_from={init}",
                "--micro_batch_size=8",
                "--pairs_per_step=8",
                f"--max_steps={DPO_STEPS}",
                "--warmup_steps=5",
                f"--learning_rate={DPO_LEARNING_RATE}",
                f"--min_lr={DPO_LEARNING_RATE / 10}",
                f"--eval_interval={DPO_STEPS}",
                "--eval_batches=4",
                f"--checkpoint_interval={DPO_STEPS}",
                "--sample_max_new_tokens=0",
                f"--rpo_alpha={DPO_RPO_ALPHA}",
                *extra,
            ],
        )
        _cache[key] = pipeline.checkpoints / run_name
    return _cache[key]


def uses_sample_pipeline(test_file: Path) -> bool:
    """Whether a test file calls the sample pipeline's functions (conftest.py runs such files
    last, so that the pipeline can be built meanwhile)."""
    return bool(USES_PIPELINE.search(Path(test_file).read_text()))


def build_in_background() -> None:
    """Start building the pipeline and its default pre-training, SFT and DPO runs in a second
    process (python3 tests/post_training_fixtures.py ROOT); the functions above wait for it."""
    root = _root()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(Path(__file__).resolve()), str(root)]
    with (root / "build.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    atexit.register(_stop, process)  # atexit runs it before the rmtree of the root
    _cache["background"] = process


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def wait_for_background_build() -> None:
    """Take over what the background build made. A failed build fails every test that waits,
    each with the build's log (none of them builds again in the half-built folder)."""
    if "build_failure" in _cache:
        raise RuntimeError(_cache["build_failure"])
    process = _cache.pop("background", None)
    if process is None:
        return
    root = _root()
    if process.wait() != 0:
        log = (root / "build.log").read_text()[-5000:]
        _cache["build_failure"] = f"the background build of the sample pipeline failed:\n{log}"
        raise RuntimeError(_cache["build_failure"])
    raw = {name: root / f"raw_{name}" for name in ("pre", "sft", "dpo")}
    tokenized = {name: root / f"tokens_{name}" for name in raw}
    pipeline = SamplePipeline(root, root / "tokenizer.json", raw, tokenized, root / "checkpoints")
    pre, sft, dpo = (pipeline.checkpoints / name for name in ("pre", "sft", "dpo"))
    _cache.update(
        {"pipeline": pipeline, ("pre", ()): pre, ("sft", (), pre): sft, ("dpo", (), sft): dpo}
    )


def exit_with_parent() -> None:
    """Stop this background build as soon as the test process that started it is gone."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def following_rate(
    checkpoint: Path,
    prompts: list[tuple[list[dict], str]],
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    samples: int = 1,
):
    """Share of answers to prompts (messages, constraints json) that satisfy them, and the
    answers: greedy, or `samples` seeded answers per prompt at `temperature`."""
    from dataset.sample_world.check import satisfies
    from model.checkpoint import load_model
    from model.generate import generate

    model, _, tokenizer_path = load_model(checkpoint)
    tokenizer = load_tokenizer(tokenizer_path)
    passed = 0
    answers = []
    for k, (messages, constraints) in enumerate(prompts):
        ids = tokenizer.prompt(messages)
        for sample in range(samples):
            new_ids = generate(
                model, ids, max_new_tokens, temperature=temperature, seed=sample * 1000 + k
            )
            answer = tokenizer.decode(list(new_ids))
            answers.append(answer)
            passed += satisfies(constraints, answer)
    return passed / len(answers), answers


def held_out_sft_prompts(limit: int) -> list[tuple[list[dict], str]]:
    """(prompt messages, constraints) of the SFT test split (instructions train never shows)."""
    import datasets

    rows = datasets.load_from_disk(str(sample_pipeline().raw["sft"] / "test"))
    rows = rows.select(range(min(limit, len(rows))))
    return [
        ([m for m in r["messages"] if m["role"] != "assistant"], r["constraints"]) for r in rows
    ]


def held_out_dpo_prompts(limit: int) -> list[tuple[list[dict], str]]:
    import datasets

    rows = datasets.load_from_disk(str(sample_pipeline().raw["dpo"] / "test"))
    rows = rows.select(range(min(limit, len(rows))))
    return [(r["prompt"], r["constraints"]) for r in rows]


def taught_checks(prompts: list[tuple[list[dict], str]]) -> list[tuple[list[dict], str]]:
    """The prompts with only the constraints the pairs teach: the hero's name and home (the
    first and third required words of a story) and the sentence limit."""
    checks = []
    for messages, constraints in prompts:
        constraints = json.loads(constraints)
        include = constraints["include"]
        taught = {"include": [include[0], include[2]]}
        if "max_sentences" in constraints:
            taught["max_sentences"] = constraints["max_sentences"]
        checks.append((messages, json.dumps(taught)))
    return checks


def satisfies_subset(constraints_json: str, answer: str, positions=(0,)) -> bool:
    """`satisfies` on some of the required words (a story's include list starts with name,
    animal, place: positions (0, 2) asks for the requested name and place)."""
    from dataset.sample_world.check import satisfies

    include = json.loads(constraints_json).get("include", [])
    return satisfies(json.dumps({"include": [include[i] for i in positions]}), answer)


# ---------------------------------------------------------------------------------------------
# Tiny runs (seconds): a 300-token tokenizer, a handful of conversations and pairs, debug model.
# ---------------------------------------------------------------------------------------------

REPLIES = ["Blue.", "Meow, mostly.", "Woof.", "Max ran through the forest and found a stick."]


def tiny_pairs() -> list[tuple[list[dict], str, str]]:
    """(prompt messages, chosen reply, rejected reply): the right answer beats a wrong one."""
    pairs = []
    for conversation in CONVERSATIONS:
        prompt = conversation[:-1]
        chosen = conversation[-1]["content"]
        for wrong in REPLIES:
            if wrong != chosen:
                pairs.append((prompt, chosen, wrong))
    return pairs


def tiny_inputs(root: Path) -> tuple[Path, Path, Path]:
    """(tokenizer path, SFT tokenized folder, DPO tokenized folder) under root."""
    tokenizer_path = root / "tokenizer.json"
    if not tokenizer_path.exists():
        train_tiny_tokenizer(tokenizer_path)
        write_sft_folder(root / "sft", tokenizer_path, CONVERSATIONS * 6)
        write_dpo_folder(root / "dpo", tokenizer_path, tiny_pairs())
    return tokenizer_path, root / "sft", root / "dpo"


TINY_RUN = dict(  # the settings the tiny SFT and DPO runs share: six CPU steps, no in-run scores
    block_size=48,
    micro_batch_size=2,
    tokens_per_step=0,
    max_steps=6,
    learning_rate=3e-3,
    min_lr=3e-4,
    warmup_steps=1,
    eval_interval=3,
    eval_batches=2,
    log_interval=1,
    checkpoint_interval=3,
    keep_last=2,
    sample_max_new_tokens=4,
    num_text_samples=1,
    precision="fp32",
    device="cpu",
    seed=5,
    compile=False,
    eval_tasks="",
)


def tiny_sft_config(root: Path, **overrides):
    import post_training_sft

    tokenizer_path, sft_dir, _ = tiny_inputs(root)
    base = dataclasses.replace(
        post_training_sft.CONFIG,
        run_name="sft",
        checkpoint_dir=str(root / "checkpoints"),
        data_dir=str(sft_dir),
        tokenizer_path=str(tokenizer_path),
        init_from=None,
        model_preset="debug",
        **TINY_RUN,
    )
    return dataclasses.replace(base, **overrides)


def tiny_dpo_config(root: Path, init_from: Path, **overrides):
    import post_training_dpo

    tokenizer_path, _, dpo_dir = tiny_inputs(root)
    base = dataclasses.replace(
        post_training_dpo.CONFIG,
        run_name="dpo",
        checkpoint_dir=str(root / "checkpoints"),
        data_dir=str(dpo_dir),
        tokenizer_path=str(tokenizer_path),
        init_from=str(init_from),
        **TINY_RUN,
        eval_split="test",
        pairs_per_step=0,
    )
    return dataclasses.replace(base, **overrides)


def tiny_sft_checkpoint(root: Path) -> Path:
    """A debug model after 2 SFT steps on the tiny data: the starting point of DPO tests."""
    from training.sft_stage import SFTStage
    from training.trainer import train

    run_dir = root / "checkpoints" / "start"
    if not (run_dir / "latest").exists():
        train(tiny_sft_config(root, run_name="start", max_steps=2), SFTStage)
    return run_dir


def run_context(config, device: str = "cpu"):
    """The RunContext the engine would hand a stage for `config` (for stage-level tests)."""
    from training.device import Distributed
    from training.trainer import run_context as engine_run_context

    one_process = Distributed(rank=0, world_size=1, device=torch.device(device))
    return engine_run_context(config, one_process)[0]


@torch.no_grad()
def pair_logps(checkpoint: Path, split_dir: Path, limit: int | None = None) -> np.ndarray:
    """[pairs, 2] summed log-probs of the chosen and rejected replies of a split's first `limit`
    usable pairs (all by default)."""
    from model.checkpoint import load_model
    from tokenizer.tokenized_data import open_split
    from training.dpo_stage import build_batch, load_pairs, sequence_logps

    model = load_model(checkpoint)[0]
    pairs = load_pairs(open_split(split_dir), BLOCK_SIZE, pad_id=1)
    count = min(len(pairs), limit or len(pairs))
    out = []
    for first in range(0, count, 16):
        ks = np.arange(first, min(first + 16, count))
        batch = build_batch(pairs, ks)
        sums, _ = sequence_logps(model(batch["inputs"]), batch["targets"])
        out.append(sums.view(2, -1).T.numpy())
    return np.concatenate(out)


if __name__ == "__main__":  # the background build (build_in_background)
    threading.Thread(target=exit_with_parent, daemon=True).start()
    torch.set_num_threads(1)
    _cache["root"] = Path(sys.argv[1])
    dpo_checkpoint()  # the pipeline, pre-training and SFT on the way
