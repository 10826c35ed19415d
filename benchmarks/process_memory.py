"""Peak memory and CPU time of a command and every process it starts, sampled from /proc.

    from benchmarks.process_memory import run_measured
    result = run_measured([sys.executable, "-m", "tokenizer.tokenize_dataset", ...], log_path)

Shared by the benchmark scripts (tokenize_benchmark.py, data_benchmark.py). Linux only.
"""

import os
import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from the parent ids in /proc/<pid>/stat."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in kB; zeros once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = [re.search(rf"{key}:\s+(\d+)", status) for key in ("VmRSS", "VmHWM")]
    return tuple(int(v.group(1)) if v else 0 for v in values)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def run_measured(command: list[str], log: Path, cwd: Path = REPO) -> dict:
    """Run `command` (stdout and stderr to `log`, so a full pipe never stalls it): wall seconds,
    stdout text, and, sampled from /proc every 50 ms: the peak of the summed RSS of the process
    tree, the largest single process's own peak (VmHWM), and CPU seconds (the command's own
    process, and all of them; the last sample before each exits, so a little short)."""
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        tree_peak, process_peak, pids, last_scan = 0, 0, [process.pid], 0.0
        cpu: dict[int, float] = {}
        while process.poll() is None:
            if time.perf_counter() - last_scan > 1.0:  # new workers appear rarely
                pids, last_scan = descendants(process.pid), time.perf_counter()
            memory = [memory_kb(pid) for pid in pids]
            tree_peak = max(tree_peak, sum(rss for rss, _ in memory))
            process_peak = max([process_peak] + [hwm for _, hwm in memory])
            for pid in pids:
                used = cpu_seconds(pid)
                if used is not None:
                    cpu[pid] = max(cpu.get(pid, 0.0), used)
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    text = log.read_text()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{text[-2000:]}")
    return {
        "seconds": seconds,
        "stdout": text,
        "largest_process_peak_rss_mb": process_peak / 1024,
        "tree_peak_rss_mb": tree_peak / 1024,
        "main_cpu_seconds": cpu.get(process.pid, 0.0),
        "tree_cpu_seconds": sum(cpu.values()),
    }
