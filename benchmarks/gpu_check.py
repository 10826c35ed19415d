"""Everything a session with a lent GPU should run, in one go (about 8 minutes on an H100/H200).

    python3 benchmarks/gpu_check.py                 # from the repository root
    python3 benchmarks/gpu_check.py --budget-s 300  # less time: later parts are skipped
    python3 benchmarks/gpu_check.py --only train_124m_adamw,gpu_tests

On the lent machine (no network), through the device tool with carry [".whl", ".baseline"]:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py --budget-s 480 --out-dir $OUT
.whl/ holds the wheels the machine lacks (FastAPI, uvicorn, the openai client and what they
need, for the server's GPU test; torchao, for FP8); .baseline/ the tree before a change (below).
Both are ignored by git, so only `carry` takes them along.

It runs, each in its own process with a time limit, most valuable first:
  1. generation benchmark, 124m bf16, 256 and 1024 new tokens: eager, CUDA graphs, 8 streams
     batched, the graph's replay time alone and its kernels (goals: one stream >= 1,500
     tokens/s; 8 streams >= 5x one stream's tokens/s)
  2. the GPU-only pytest tests (tests named *gpu* or *cuda* in the files that check for CUDA)
  3. training benchmark, compiled + bf16, 170m at 16 x 1024 then 124m at 32 x 1024:
     pre_training.py's Muon step accumulating 8 (170m, with a torch.profiler breakdown: GPU ms
     per phase, top kernels) or 4 (124m) micro-batches; AdamW; FP8 for the blocks' layers that
     torchao's size rule picks (skipped without torchao)
  4. the generation benchmark on the tree in .baseline (the decoder before a change: an A/B in
     one session; skipped when .baseline is absent)
  5. pre_training.py's L4 shape (170m, 8 x 1024, Muon): does it fit 24 GB?; 124m AdamW
  6. benchmarks/time_to_loss.py --mode gpu: baseline AdamW vs Muon at 124m (about 4 minutes;
     it builds its tokenized sample corpus unless data/time_to_loss/sample_40mb is there, which
     needs HF datasets: on a machine without it, build it first elsewhere and bring it along)
  7. benchmarks/evaluation_benchmark.py: the six-task evaluation suite (`core`) at the real
     splits' sizes on the 124m preset, bf16, synthetic examples (goal: under 5 minutes)
The budget counts from the start (importing torch included) and a part starts only when its
minimum fits; a smaller --budget-s skips the later ones. It prints a table of each, and
planner-vs-measured peak memory. It needs only torch, numpy, safetensors, tokenizers, tqdm (+
tensorboard and pytest for the tests); a part whose modules are missing is skipped and says so.
Each part's output goes straight to gpu_check.log, and gpu_check.json and the tables
(gpu_check.txt) are rewritten after every part, in --out-dir (default: $OUT when set, else a
temporary folder): a run cut short keeps what it measured.

Tiny CPU example (checks the script itself; every GPU part is skipped):
    python3 benchmarks/gpu_check.py --budget-s 60
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTED = time.monotonic()  # the budget counts from here: start-up (importing torch) included
REPO = Path(__file__).resolve().parent.parent
# The tree before a change, for a same-session A/B: `git archive <commit> | tar -x -C .baseline`
# (ignored by git; carried to the GPU machine with the run). Parts on it skip when it is absent.
BEFORE = REPO / ".baseline"
TRAIN = [sys.executable, "-m", "benchmarks.training_benchmark", "--block-size", "1024"]
BASE_MODULES = ("torch", "numpy", "safetensors", "tokenizers", "tqdm")


@dataclass
class Part:
    name: str
    argv: list[str]
    cap_s: int  # time limit for this part
    min_s: int  # skipped when less time than this is left
    needs: tuple[str, ...] = BASE_MODULES
    root: Path = REPO  # the tree it runs in (BEFORE for the A/B's other side)
    env: dict[str, str] = field(default_factory=dict)  # e.g. an Inductor setting to try
    rc: int | None = None
    seconds: float = 0.0
    output: str = ""
    note: str = ""
    records: list[dict] = field(default_factory=list)


def gpu_test_files() -> list[str]:
    """Test files that have GPU-only tests (they check torch.cuda.is_available())."""
    files = sorted((REPO / "tests").glob("test_*.py"))
    return [str(p.relative_to(REPO)) for p in files if "cuda.is_available()" in p.read_text()]


def compiled_step(preset: str, micro_batch: int) -> list[str]:
    """training_benchmark's command for a compiled step: 10 timed steps after 4."""
    options = f"--preset {preset} --micro-batch {micro_batch} --compile on --steps 10 --warmup 4"
    return TRAIN + options.split()


def parts() -> list[Part]:
    step_170m, step_124m = compiled_step("170m", 16), compiled_step("124m", 32)
    options = "--preset 124m --device cuda --dtype bfloat16 --repeats 2 --streams 8"
    generation = [sys.executable, "benchmarks/generation_benchmark.py", *options.split()]
    return [
        # decoding speed against its goals (graph replay time = the GPU's share)
        Part(
            "generation",
            generation
            + [
                "--new-tokens",
                "256",
                "1024",
                "--modes",
                "eager",
                "cuda_graphs",
                "batched",
                "--profile",
            ],
            150,
            60,
        ),
        Part(
            "gpu_tests",
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-s",
                "-rs",
                "-p",
                "no:cacheprovider",
                "--continue-on-collection-errors",
                "-k",
                "gpu or cuda",
                *gpu_test_files(),
            ],
            180,
            60,
            BASE_MODULES + ("pytest", "tensorboard"),
        ),
        # pre_training.py's step (Muon, its work spread over the micro-batches it accumulates;
        # with a profile), AdamW's, and FP8 for the layers torchao's own rule expects to gain
        # (torchao carried as a wheel)
        Part(
            "train_170m_muon_accumulated",
            step_170m + ["--optimizer", "muon", "--accumulation", "8", "--profile", "2"],
            120,
            50,
        ),
        Part("train_170m_adamw", step_170m, 90, 40),
        Part(
            "train_170m_fp8", step_170m + ["--fp8", "auto"], 120, 100, BASE_MODULES + ("torchao",)
        ),
        Part(
            "train_124m_muon_accumulated",
            step_124m + ["--optimizer", "muon", "--accumulation", "4"],
            100,
            40,
        ),
        Part(
            "train_124m_fp8", step_124m + ["--fp8", "auto"], 120, 100, BASE_MODULES + ("torchao",)
        ),
        # the decoder of the .baseline tree, for an A/B in one session
        Part(
            "generation_before",
            generation + ["--new-tokens", "256", "1024", "--modes", "cuda_graphs", "batched"],
            120,
            60,
            root=BEFORE,
        ),
        # The L4 default shape (8 x 1024) next to 16: do the defaults fit 24 GB?
        Part(
            "train_170m_l4_shape",
            TRAIN
            + [
                "--preset",
                "170m",
                "--micro-batch",
                "8",
                "--compile",
                "on",
                "--optimizer",
                "muon",
                "--accumulation",
                "4",
                "--steps",
                "5",
                "--warmup",
                "2",
            ],
            70,
            30,
        ),
        Part("train_124m_adamw", step_124m, 90, 40),
        Part(
            "time_to_loss_124m",
            [sys.executable, "-m", "benchmarks.time_to_loss", "--mode", "gpu"],
            300,
            150,
            BASE_MODULES + ("tensorboard",),
        ),
        # the six-task suite at the real splits' sizes, 124m bf16 (goal: under 5 minutes)
        Part(
            "evaluation_124m",
            [
                sys.executable,
                "benchmarks/evaluation_benchmark.py",
                "--preset",
                "124m",
                "--device",
                "cuda",
                "--limit",
                "full",
            ],
            330,
            60,
        ),
    ]


def missing_modules(names) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def environment() -> dict:
    info = {"python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["capability"] = f"{props.major}.{props.minor}"
            info["memory_gb"] = round(props.total_memory / 1e9, 1)
    except Exception as error:  # report, do not die: the table is the point
        info["torch_error"] = repr(error)
    optional = ("tensorboard", "pytest", "hypothesis", "transformers", "datasets", "triton")
    info["missing_modules"] = missing_modules(BASE_MODULES + optional)
    return info


def run_part(part: Part, time_left: float, log) -> None:
    """Run one part; its output goes straight to the log (kept if this run is cut short)."""
    missing = missing_modules(part.needs)
    if missing:
        part.note = f"skipped: missing {', '.join(missing)}"
        return
    if not part.root.is_dir():
        part.note = f"skipped: no {part.root.name} tree (see BEFORE)"
        return
    if time_left < part.min_s:
        part.note = f"skipped: {time_left:.0f}s left of the budget"
        return
    limit = min(part.cap_s, time_left)
    path = os.pathsep.join(filter(None, [str(part.root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path, **part.env}
    log.write(
        f"\n===== {part.name}: {' '.join(part.argv)} in {part.root} {part.env} "
        f"(limit {limit:.0f}s)\n"
    )
    log.flush()
    start_offset, started = log.tell(), time.monotonic()
    try:
        part.rc = subprocess.run(
            part.argv, cwd=part.root, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit
        ).returncode
    except subprocess.TimeoutExpired:
        part.rc = 124
        part.note = f"timed out after {limit:.0f}s"
    part.seconds = time.monotonic() - started
    log.seek(start_offset)
    part.output = log.read()
    for line in part.output.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):  # a log line that looks like JSON
                part.records.append(json.loads(line))


def training_table(all_parts: list[Part]) -> list[str]:
    rows = [
        f"{'part':30s} {'micro-batch':16s} {'tokens/s':>10s} {'MFU':>6s} {'step ms':>8s} "
        f"{'peak GB':>8s} {'plan GB':>8s}"
    ]
    for part in all_parts:
        if not part.name.startswith("train_"):
            continue
        for r in part.records:
            shape = f"{r.get('micro_batch')}x{r.get('block_size')} x{r.get('accumulation', 1)}"
            label = f"{part.name:30s} {shape:16s}"
            if "error" in r:
                rows.append(f"{label} ERROR {r['error'][:80]}")
                continue
            if "tokens_per_s" not in r:  # another JSON line (a configuration, say)
                continue
            mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
            rows.append(
                f"{label} {r['tokens_per_s']:>10,} {mfu:>6s} {r['step_ms']:>8.1f} "
                f"{r.get('peak_memory_gb', 0):>8.2f} {r.get('planned_memory_gb', 0):>8.2f}"
            )
    return rows


def memory_table(all_parts: list[Part]) -> list[str]:
    """Planner (model/plan.py) vs torch.cuda.max_memory_allocated, eager runs only."""
    rows = []
    for part in all_parts:
        for r in part.records:
            if part.name.startswith("train_") and not r.get("compile") and "peak_memory_gb" in r:
                ratio = r["planned_memory_gb"] / r["peak_memory_gb"]
                rows.append(
                    f"{r['preset']} {r['micro_batch']}x{r['block_size']} eager bf16: measured "
                    f"{r['peak_memory_gb']:.2f} GB, planned {r['planned_memory_gb']:.2f} GB "
                    f"(plan/measured {ratio:.2f})"
                )
            if part.name == "gpu_tests" and "estimate" in r and "measured" in r:
                rows.append(
                    f"15m 16x512 eager bf16, checkpointing={r['checkpointing']}: measured "
                    f"{r['measured'] / 1e9:.2f} GB, planned {r['estimate'] / 1e9:.2f} GB "
                    f"(plan/measured {r['estimate'] / r['measured']:.2f})"
                )
    return rows


def tests_summary(part: Part) -> list[str]:
    lines = [line for line in part.output.splitlines() if re.search(r"\b(passed|failed)\b", line)]
    failures = [line for line in part.output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return (lines[-1:] or ["(no pytest summary line)"]) + failures


def profile_table(part: Part) -> list[str]:
    """GPU milliseconds per phase of the step, then its largest kernels."""
    rows = []
    for r in part.records:
        profile = r.get("profile") or {}
        phases = profile.get("phase_ms", {})
        rows.append(", ".join(f"{name} {ms:.1f} ms" for name, ms in phases.items()))
        rows += [
            f"{k['ms_per_step']:8.2f} ms {k['share']:6.1%}  {k['name']}"
            for k in profile.get("top_kernels", [])
        ]
    return rows


def time_to_loss_table(part: Part) -> list[str]:
    """Each recipe's final validation loss and tokens/seconds to the baseline's final loss."""
    rows = []
    for r in part.records:
        if "recipe" not in r:
            continue
        bound = "at most " if r.get("at_most") else ""  # reached by the first evaluation
        reached = (
            f"{bound}{r['tokens_to_target']:,.0f} tokens ({r['token_ratio']:.2f}x), "
            f"{r['seconds_to_target']:.0f} s ({r['seconds_ratio']:.2f}x)"
            if "tokens_to_target" in r
            else "baseline's final loss not reached"
        )
        rows.append(f"{r['recipe']}: final val loss {r['final_val_loss']:.4f}; {reached}")
    return rows


def evaluation_table(part: Part) -> list[str]:
    """Examples per second of each task, and the whole suite against its 5-minute goal."""
    rows = []
    for r in part.records:
        if "task" in r:
            rows.append(
                f"{r['task']:16s} {r['examples']:>6} examples {r['seconds']:>8.1f} s "
                f"{r['examples_per_s']:>9.1f} examples/s"
            )
        elif "suite" in r:
            setting = f"{r['preset']}, batch {r['batch_size']}, bf16 {r['bf16']}"
            rows.append(
                f"goal, the suite under 300 s ({setting}): {r['seconds']:.0f} s for "
                f"{r['examples']} examples"
            )
    return rows


def generation_table(part: Part) -> list[str]:
    """tokens/s per mode, ours over transformers, and the two GPU decoding goals."""
    rows, speed = [], {}
    for r in part.records:
        if "tokens_per_s" in r:
            speed[r["mode"], r["new_tokens"]] = r["tokens_per_s"]
            rows.append(
                f"{r['preset']} {r['dtype']} {r['mode']:12s} x{r['streams']} "
                f"{r['new_tokens']:>5} new tokens: {r['tokens_per_s']:>9.1f} tokens/s"
            )
        elif "ours_over_transformers" in r:
            rows.append(
                f"  {r['mode']} / transformers, {r['new_tokens']} new tokens: "
                f"{r['ours_over_transformers']:.2f}x"
            )
        elif "graph_replay_ms" in r:
            rows.append(
                f"  {r['mode']} x{r['streams']}: graph replay alone "
                f"{r['graph_replay_ms']:.3f} ms per step"
            )
        elif "warning" in r:
            rows.append(f"  warning: {r['warning']}")
    for new_tokens in sorted({n for _, n in speed}):
        one, batched = speed.get(("cuda_graphs", new_tokens)), speed.get(("batched", new_tokens))
        if one:
            rows.append(f"goal, one stream >= 1,500 tokens/s ({new_tokens} new): {one:,.0f}")
        if one and batched:
            rows.append(f"goal, 8 streams >= 5x one ({new_tokens} new): {batched / one:.1f}x")
    return rows


def summary(env: dict, selected: list[Part]) -> list[str]:
    """The tables, from what the parts printed."""
    lines = ["", f"== {env.get('gpu', 'no GPU')} | torch {env.get('torch')} ==", "", "parts:"]
    lines += [f"  {p.name:28s} {p.note or f'rc={p.rc}'} ({p.seconds:.0f}s)" for p in selected]
    lines += ["", "training (bf16):", *("  " + r for r in training_table(selected))]
    lines += ["", "planner vs measured peak memory:", *("  " + r for r in memory_table(selected))]
    for part in selected:
        if part.name == "gpu_tests" and part.rc is not None:
            lines += ["", "GPU tests:", *("  " + r for r in tests_summary(part))]
        if any("profile" in r for r in part.records):
            lines += ["", f"{part.name}: step profile (GPU ms per phase; top kernels):"]
            lines += ["  " + r for r in profile_table(part)]
        if part.name.startswith("time_to_loss") and part.records:
            lines += ["", "time to the baseline's final validation loss:"]
            lines += ["  " + r for r in time_to_loss_table(part)]
        if part.name.startswith("evaluation") and part.records:
            lines += ["", f"{part.name} (the core suite, synthetic examples):"]
            lines += ["  " + r for r in evaluation_table(part)]
        if part.name.startswith("generation") and part.records:
            lines += ["", f"{part.name} (CUDA):", *("  " + r for r in generation_table(part))]
    return lines


def save(out_dir: Path, env: dict, selected: list[Part]) -> None:
    """gpu_check.json and the tables (gpu_check.txt), rewritten after every part."""
    parts_summary = [
        {
            "name": p.name,
            "rc": p.rc,
            "seconds": round(p.seconds, 1),
            "note": p.note,
            "records": p.records,
        }
        for p in selected
    ]
    report = {"environment": env, "parts": parts_summary}
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "gpu_check.txt").write_text("\n".join(summary(env, selected)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the GPU checks once and print a table.")
    parser.add_argument("--budget-s", type=float, default=460, help="total seconds to spend")
    parser.add_argument("--only", default="", help="comma-separated part names to run")
    parser.add_argument("--out-dir", default=os.environ.get("OUT", ""), help="logs + summary")
    args = parser.parse_args(argv)
    every_part = parts()
    only = set(filter(None, args.only.split(",")))
    unknown = only - {p.name for p in every_part}
    if unknown:
        names = ", ".join(p.name for p in every_part)
        parser.error(f"--only: no part named {', '.join(sorted(unknown))} (parts: {names})")
    selected = [p for p in every_part if not only or p.name in only]
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="gpu_check_"))
    out_dir.mkdir(parents=True, exist_ok=True)

    env = environment()
    print(json.dumps(env), flush=True)
    if not env.get("cuda"):
        for part in selected:
            part.note = "skipped: no CUDA GPU"
    deadline = STARTED + args.budget_s
    with open(out_dir / "gpu_check.log", "w+") as log:
        for part in selected if env.get("cuda") else []:
            run_part(part, deadline - time.monotonic(), log)
            status = part.note or f"rc={part.rc}"
            print(f"[{part.name}] {status}, {part.seconds:.0f}s", flush=True)
            save(out_dir, env, selected)  # a run cut short keeps what it measured
    save(out_dir, env, selected)
    print("\n".join(summary(env, selected)), flush=True)
    print(f"\nlogs and summary: {out_dir}", flush=True)
    failed = [p.name for p in selected if p.rc not in (None, 0)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
