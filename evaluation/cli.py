"""The `python3 -m evaluation` command line (the module docstring is in evaluation/__init__.py)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from common.errors import ArgumentParser, UserError
from evaluation import data
from evaluation.metrics import BOOTSTRAP_ITERS
from evaluation.models import HFModel, load_checkpoint_model, pick_device, use_bf16
from evaluation.results import lm_eval_layout, table, write_json
from evaluation.runner import run_task
from evaluation.tasks import FEWSHOT_SEED, all_tasks, resolve_tasks


class ModelArg(argparse.Action):
    """--checkpoint and --hf append (kind, path) to one list, so the table keeps their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = "checkpoint" if option_string == "--checkpoint" else "hf"
        namespace.models = [*(namespace.models or []), (kind, values)]


def whole_number(flag: str, text: str | None, minimum: int) -> int | None:
    """The value of an integer flag, or a UserError that names the flag and the bound."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"{flag} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise UserError(f"{flag} must be at least {minimum}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    tasks = all_tasks()
    task_lines = "; ".join(f"{name}: {task.summary}" for name, task in tasks.items())
    parser = ArgumentParser(
        prog="python3 -m evaluation",
        description="Score checkpoints and transformers folders on benchmark tasks with "
        "lm-evaluation-harness's definitions, side by side.",
        epilog=f"Tasks: {task_lines}. Group core: hellaswag, arc_easy, arc_challenge, piqa, "
        "winogrande, lambada_openai (+ arc_easy_letters, arc_challenge_letters when a model "
        "is scored as a chat model).",
    )
    parser.set_defaults(models=[])
    parser.add_argument(
        "--checkpoint",
        action=ModelArg,
        metavar="DIR",
        help="one of our run folders (follows `latest`) or step folders; repeat for several",
    )
    parser.add_argument(
        "--hf",
        action=ModelArg,
        metavar="DIR",
        help="a transformers causal-LM folder (e.g. from python3 -m model.export.hf); "
        "repeat for several",
    )
    parser.add_argument(
        "--tasks",
        default="core",
        help="comma-separated task names and groups (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        default=None,
        metavar="N",
        help="score only the first N examples of each task (default: all)",
    )
    parser.add_argument(
        "--num-fewshot",
        default="0",
        metavar="K",
        help="solved examples before each question, drawn from the task's few-shot split "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--fewshot-seed",
        type=int,
        default=FEWSHOT_SEED,
        help="seed of the few-shot draws, lm-eval's default (default: %(default)s)",
    )
    chat = parser.add_mutually_exclusive_group()
    chat.add_argument(
        "--chat",
        dest="chat",
        action="store_true",
        default=None,
        help="score every model as a chat model: the question as a user turn, each choice as "
        "the assistant's reply (default: checkpoints of the sft and dpo stages)",
    )
    chat.add_argument(
        "--no-chat",
        dest="chat",
        action="store_false",
        help="score every model on plain text (default: pre-training checkpoints, HF folders)",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write the figures in lm-eval's results layout (several models: one file each, "
        "PATH's name + the model's name)",
    )
    parser.add_argument(
        "--log-samples",
        action="store_true",
        help="with --json: add every example's log-likelihoods and choice (lm-eval's samples)",
    )
    parser.add_argument(
        "--data-dir",
        default=data.DEFAULT_DATA_DIR,
        help="where the datasets' copies are (python3 -m dataset.evaluation.download_dataset); "
        "a missing one is fetched once (default: %(default)s)",
    )
    parser.add_argument(
        "--sample-seed",
        type=int,
        default=0,
        help="seed of the sample world when its test is generated, the sample pipeline's "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        default="32",
        metavar="N",
        help="choices scored in one forward pass (default: %(default)s; more on a GPU)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when there is one)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 on a GPU that has it, else fp32 (default: %(default)s)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="PATH",
        help="for --checkpoint: the tokenizer.json the run used, when the checkpoint has none",
    )
    parser.add_argument(
        "--bootstrap-iters",
        default=str(BOOTSTRAP_ITERS),
        metavar="N",
        help="resamples for the perplexity's standard error (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def load_models(args, device, bf16) -> list:
    if not args.models:
        raise UserError("nothing to score: give --checkpoint DIR or --hf DIR (or several)")
    if args.tokenizer and not any(kind == "checkpoint" for kind, _ in args.models):
        raise UserError("--tokenizer applies to --checkpoint; an --hf folder has its own")
    models = []
    for kind, path in args.models:
        if kind == "checkpoint":
            models.append(load_checkpoint_model(path, device, bf16, args.tokenizer))
        else:
            models.append(HFModel(path, device, bf16))
    return distinct_names(models)


def distinct_names(models: list) -> list:
    """Models of one short name (a/sft, b/sft) show their paths as given, then #2, #3...: the
    table's columns and the --json files (one per model, named after it) must not collide."""
    short = Counter(model.name for model in models)
    for model in models:
        if short[model.name] > 1:
            model.name = model.source
    seen = Counter()
    for model in models:
        seen[model.name] += 1
        if seen[model.name] > 1:
            model.name = f"{model.name} #{seen[model.name]}"
    return models


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.limit = whole_number("--limit", args.limit, 1)
    args.num_fewshot = whole_number("--num-fewshot", args.num_fewshot, 0)
    args.batch_size = whole_number("--batch-size", args.batch_size, 1)
    args.bootstrap_iters = whole_number("--bootstrap-iters", args.bootstrap_iters, 0)
    if args.log_samples and not args.json:
        raise UserError("--log-samples adds to the --json file; give --json PATH too")
    device = pick_device(args.device)
    models = load_models(args, device, use_bf16(args.precision, device))
    chat_of = [model.default_chat if args.chat is None else args.chat for model in models]
    tasks = resolve_tasks(args.tasks, chat=any(chat_of))
    loaded = {}
    for task in tasks:
        if task.dataset not in loaded:
            loaded[task.dataset] = data.load_dataset_dict(
                task.dataset, args.data_dir, args.sample_seed
            )
    docs, sizes = {}, {}
    for task in tasks:
        docs[task.name] = data.task_docs(
            task, loaded[task.dataset], args.limit, args.num_fewshot > 0
        )
        sizes[task.name] = docs[task.name][2]
    all_results = []
    for model, chat in zip(models, chat_of):
        model_results = []
        for task in tasks:
            eval_docs, fewshot_docs, _ = docs[task.name]
            model_results.append(
                run_task(
                    model,
                    task,
                    eval_docs,
                    fewshot_docs,
                    num_fewshot=args.num_fewshot,
                    chat=chat,
                    batch_size=args.batch_size,
                    fewshot_seed=args.fewshot_seed,
                    progress=not args.quiet,
                    bootstrap_iters=args.bootstrap_iters,
                )
            )
        all_results.append(model_results)
    print(table(models, all_results, show_references=args.num_fewshot == 0))
    if args.json:
        settings = {
            "batch_size": args.batch_size,
            "limit": args.limit,
            "fewshot_seed": args.fewshot_seed,
            "bootstrap_iters": args.bootstrap_iters,
            "sizes": sizes,
        }
        layouts = [
            lm_eval_layout(model, results, settings, args.log_samples)
            for model, results in zip(models, all_results)
        ]
        for path in write_json(args.json, layouts):
            print(f"wrote {path}", file=sys.stderr)
    return 0
