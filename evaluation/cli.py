"""The `python3 -m evaluation` command line (the module docstring is in evaluation/__init__.py)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write_text
from common.errors import ArgumentParser, UserError
from dataset.evaluation.download_dataset import DEFAULT_OUTPUT
from evaluation.lm import CHAT_STAGES, SimpleTransformerLM, use_bf16
from evaluation.tasks import FEWSHOT_SEED, evaluate_tasks, load_tasks, metric_values, resolve_tasks
from model.generate import pick_device

PRECISIONS = ("auto", "fp32", "bf16")
AT_LEAST = {"limit": 1, "num_fewshot": 0, "batch_size": 1, "bootstrap_iters": 0}  # flag: minimum
# Published zero-shot lm-eval figures of small models (their sources: README.md, Evaluate)
# fmt: off
REFERENCE_SCORES = {
    "GPT-2 124M": {"hellaswag": {"acc": 0.2892, "acc_norm": 0.3114},
                   "lambada_openai": {"acc": 0.3256, "perplexity": 40.0554}},
    "Pythia-160M": {"arc_easy": {"acc": 0.4352, "acc_norm": 0.3965},
                    "arc_challenge": {"acc": 0.1877, "acc_norm": 0.2329},
                    "piqa": {"acc": 0.6273, "acc_norm": 0.6164}, "winogrande": {"acc": 0.5312},
                    "lambada_openai": {"acc": 0.3284, "perplexity": 38.0649}},
}
# fmt: on


@dataclass
class Scored:
    """One model of the table: its lm-eval LM, and how it is named and scored."""

    lm: object  # SimpleTransformerLM, or lm-eval's HFLM for a transformers folder
    name: str
    source: str  # the path given on the command line
    kind: str  # "checkpoint" | "hf"
    stage: str  # "pre_training", "sft", "dpo" or "hf"
    chat: bool


class ModelArg(argparse.Action):
    """--checkpoint and --hf append (kind, path) to one list, so the table keeps their order."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = "checkpoint" if option_string == "--checkpoint" else "hf"
        namespace.models = [*(namespace.models or []), (kind, values)]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python3 -m evaluation",
        description="Score checkpoints and transformers folders (repeat --checkpoint and --hf) "
        "side by side on lm-evaluation-harness tasks. Checkpoints of the sft and dpo stages are "
        "scored as chat models, the others on plain text, unless --chat or --no-chat says.",
        epilog="Tasks: any lm-eval task or group (hellaswag, mmlu, gsm8k, wikitext ...; "
        "`lm-eval ls tasks` lists them) and ours, in dataset/evaluation/tasks/: core (hellaswag, "
        "arc_easy, arc_challenge, piqa, winogrande, lambada_openai; + arc_easy_letters, "
        "arc_challenge_letters when a model is scored as a chat model), sample_world.",
    )
    parser.set_defaults(models=[], chat=None)
    add = parser.add_argument
    add("--checkpoint", action=ModelArg, metavar="DIR", help="one of our run (or step) folders")
    add("--hf", action=ModelArg, metavar="DIR", help="a transformers folder: lm-eval's hf model")
    add("--tasks", default="core", help="comma-separated tasks and groups (default: core)")
    add("--limit", type=int, metavar="N", help="the first N examples of each task")
    add("--num-fewshot", type=int, metavar="K", help="solved examples first (default: the task's)")
    add("--fewshot-seed", type=int, default=FEWSHOT_SEED, help="lm-eval's default: 1234")
    chat = parser.add_mutually_exclusive_group()
    chat.add_argument("--chat", action="store_true", help="every model through its chat template")
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="all on plain text")
    add("--json", metavar="PATH", help="lm-eval's results file (several models: PATH.<model>)")
    add("--log-samples", action="store_true", help="with --json: every example's samples")
    add("--data-dir", default=DEFAULT_OUTPUT, help="the datasets' copies (default: %(default)s)")
    add("--batch-size", type=int, default=32, help="continuations per forward pass (default: 32)")
    add("--device", help="cpu, cuda, cuda:1, mps (default: cuda when there is one)")
    add("--precision", choices=PRECISIONS, default="auto", help="auto: bf16 on a GPU that has it")
    add("--tokenizer", metavar="PATH", help="for a --checkpoint without one: its tokenizer.json")
    add(
        "--bootstrap-iters",
        type=int,
        default=1000,
        help="resamples for the standard error of perplexities (lm-eval's default: 100000; 0: "
        "no standard errors)",
    )
    add("--quiet", action="store_true", help="no progress bars, no lm-eval log lines")
    return parser


def check_args(args: argparse.Namespace) -> None:
    if not args.models:
        raise UserError("nothing to score: give --checkpoint DIR or --hf DIR (or several)")
    if args.tokenizer and not any(kind == "checkpoint" for kind, _ in args.models):
        raise UserError("--tokenizer applies to --checkpoint; an --hf folder has its own")
    if args.log_samples and not args.json:
        raise UserError("--log-samples adds to the --json file; give --json PATH too")
    for name, least in AT_LEAST.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise UserError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")


def load_hf(path: str, device, bf16: bool, batch_size: int, chat: bool):
    """lm-eval's `hf` model on a transformers causal-LM folder; a wrong folder is one line."""
    import transformers
    from lm_eval.models.huggingface import HFLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if not (Path(path) / "config.json").is_file():
        raise UserError(f"--hf {path}: no config.json there; give a transformers model folder")
    try:
        model_type = transformers.AutoConfig.from_pretrained(path).model_type
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            raise UserError(f"--hf {path} is a {model_type!r} model, not a causal language model")
        dtype = "bfloat16" if bf16 else "float32"
        lm = HFLM(pretrained=path, device=str(device), batch_size=batch_size, dtype=dtype)
    except (ValueError, OSError, KeyError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"--hf {path} is not a causal language model folder ({first})") from None
    if chat and not lm.tokenizer.chat_template:
        raise UserError(f"--hf {path} has no chat template; score it with --no-chat")
    return lm


def load_models(args, device) -> list[Scored]:
    models = []
    for kind, path in args.models:
        if kind == "checkpoint":
            lm = SimpleTransformerLM.from_checkpoint(
                path, args.tokenizer, device, args.batch_size, args.precision
            )
            chat = lm.stage in CHAT_STAGES if args.chat is None else args.chat
            models.append(Scored(lm, short_name(path), path, kind, lm.stage, chat))
        else:
            bf16 = use_bf16(args.precision, device)
            lm = load_hf(path, device, bf16, args.batch_size, bool(args.chat))
            models.append(Scored(lm, short_name(path), path, kind, "hf", bool(args.chat)))
    return distinct_names(models)


def short_name(path: str) -> str:
    """checkpoints/sample_sft -> sample_sft; checkpoints/run/step_0000100 -> run/step_0000100."""
    parts = Path(path).resolve().parts
    if len(parts) > 1 and parts[-1].startswith("step_"):
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else str(path)


def distinct_names(models: list[Scored]) -> list[Scored]:
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


def random_baseline(results: dict) -> dict[str, float]:
    """What guessing scores on each multiple-choice task (acc and acc_norm alike)."""
    return {
        task: sum(1 / len(sample["arguments"]) for sample in samples) / len(samples)
        for task, samples in results["samples"].items()
        if samples and results["configs"][task]["output_type"] == "multiple_choice"
    }


def _figure(value: float | None, error: float | None, percent: bool) -> str:
    if value is None:
        return ""
    scale, digits = (100, 1) if percent else (1, 2)
    text = f"{scale * value:.{digits}f}"
    return text + (f" ± {scale * error:.{digits}f}" if error is not None else "")


def table(models: list[Scored], all_results: list[dict], show_references: bool) -> str:
    """Task, metric, each model's figure ± standard error, random guessing, published figures."""
    figures = [{(t, m): (v, e) for t, m, v, e in metric_values(r)} for r in all_results]
    keys = list(dict.fromkeys(key for model_figures in figures for key in model_figures))
    baseline, better = {}, {}
    for results in all_results:
        baseline |= random_baseline(results)
        better |= results["higher_is_better"]
    tasks = {task for task, _ in keys}
    references = [name for name, scores in REFERENCE_SCORES.items() if tasks & set(scores)]
    references = references if show_references else []
    header = ["task", "metric", *(f"[{i + 1}]" for i in range(len(models))), "random"]
    rows = []
    for task, metric in keys:
        values = [f.get((task, metric), (None, None)) for f in figures]
        percent = bool(better.get(task, {}).get(metric.split(",")[0]))
        percent = percent and all(value <= 1 for value, _ in values if value is not None)
        row = [task, metric, *(_figure(value, error, percent) for value, error in values)]
        row.append(_figure(baseline.get(task) if metric in ("acc", "acc_norm") else None, None, 1))
        for name in references:
            row.append(_figure(REFERENCE_SCORES[name].get(task, {}).get(metric), None, percent))
        rows.append(row)
    lines = []
    for i, (model, results) in enumerate(zip(models, all_results)):
        shots = "/".join(str(k) for k in sorted(set(results["n-shot"].values()))) or "0"
        how = "a chat model" if model.chat else "plain text"
        where = f"{model.source}; {model.kind}, stage {model.stage}"
        lines.append(f"[{i + 1}] {model.name} ({where}): scored as {how}, {shots}-shot")
    lines.append("accuracies in %, ± one standard error; perplexity: lower is better")
    if references:
        lines.append("published zero-shot figures, their sources: README.md, Evaluate")
    lines.append("")
    header += references
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        cells = [c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def results_file(model: Scored, results: dict, args) -> dict:
    """lm-eval's results layout, with its `config` section written for this model."""
    layout = {k: v for k, v in results.items() if k != "samples" or args.log_samples}
    ours = model.kind == "checkpoint"
    layout["config"] = {
        "model": "simple-transformer" if ours else "hf",
        "model_args": f"{'checkpoint' if ours else 'pretrained'}={model.source}",
        "model_name": model.name,
        "stage": model.stage,
        "apply_chat_template": model.chat,
        "dtype": "bfloat16" if use_bf16(args.precision, model.lm.device) else "float32",
        "device": str(model.lm.device),
        **{
            key: getattr(args, key)
            for key in ("batch_size", "limit", "num_fewshot", "fewshot_seed", "bootstrap_iters")
        },
    }
    layout["date"] = time.time()
    layout["random_baseline"] = random_baseline(results)
    return layout


def write_json(path: str, layouts: list[dict]) -> list[Path]:
    """One model: PATH. Several: one file per model, PATH's name + "." + the model's name."""
    target = Path(path)
    names = [layout["config"]["model_name"].replace("/", "_") for layout in layouts]
    targets = [target.with_name(f"{target.stem}.{name}{target.suffix}") for name in names]
    targets = targets if len(layouts) > 1 else [target]
    target.parent.mkdir(parents=True, exist_ok=True)
    for file, layout in zip(targets, layouts):
        atomic_write_text(file, json.dumps(layout, indent=2, default=str) + "\n")
    return targets


@contextlib.contextmanager
def quietly():
    """--quiet: the bars and notes of lm-eval and transformers (stderr, a few on stdout) go."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on task configs: not ours
    resolve_tasks(args.tasks)  # a misspelt task is an error before any model loads
    with quietly() if args.quiet else contextlib.nullcontext():
        models = load_models(args, pick_device(args.device))
        tasks = {}  # per chat flag: `core` adds ARC's letter forms for chat models only
        for chat in {model.chat for model in models}:
            tasks[chat], _ = load_tasks(resolve_tasks(args.tasks, chat), args.data_dir)
        all_results = []
        for model in models:
            results = evaluate_tasks(
                model.lm,
                tasks[model.chat],
                args.limit,
                args.num_fewshot,
                args.fewshot_seed,
                model.chat,
                args.bootstrap_iters,
            )
            all_results.append(results)
    print(table(models, all_results, show_references=not args.num_fewshot))
    if args.json:
        layouts = [results_file(m, r, args) for m, r in zip(models, all_results)]
        for path in write_json(args.json, layouts):
            print(f"wrote {path}", file=sys.stderr)
    return 0
