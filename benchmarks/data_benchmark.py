"""FineWeb-Edu's data path at scale: download-to-disk and tokenize throughput, peak memory at two
corpus sizes, and the projected wall-clock of the 10B-token sample.

    nice python3 benchmarks/data_benchmark.py --size-gb 1 --small-gb 0.25 --num-proc 2

Small CPU example (a few minutes, most of it building the corpus):

    python3 benchmarks/data_benchmark.py --size-gb 0.03 --small-gb 0.01 --num-proc 2

1. Corpus (built once, kept in --work-dir): parquet files with FineWeb-Edu's ten columns (text,
   id, dump, url, file_path, language, language_score, token_count, score, int_score), ~64 MB
   of text each, made of real English text found on this machine: the docstrings of every
   installed Python module and the .md/.rst/.txt/.gz documentation beside them. Passages are
   deduplicated, cut at paragraphs into pieces of at most 6 KB (a few files are MBs long),
   then grouped into documents of 0.5-6 KB or more (FineWeb-Edu's are ~4.6 KB on average);
   to reach --size-gb the passages are grouped again in another seeded order, so documents are
   distinct but passages repeat (the unique share is printed). token_count is an estimate
   (UTF-8 bytes / 4.6, FineWeb-Edu's ratio for GPT-2 tokens): there is no GPT-2 tokenizer here.
2. Download: `python3 -m dataset.pre_training.download_dataset --dataset fineweb-edu --source
   local --data-files <files>` on the first --small-gb, then on all of it: the same file by
   file, sharded, resumable code as the Hub's, minus the network. One process.
3. Tokenizer: `tokenizer.train --max-chars 50M` on the small download (not timed).
4. Tokenize: `tokenizer.tokenize_dataset --num-proc N` on each download.

Every step runs as its own command, measured from /proc (benchmarks/process_memory.py): wall
seconds, peak RSS of the largest process and of the whole process tree, CPU seconds. Prints one
JSON line per measurement, then a markdown table and the projection for sample-10BT (about
10e9 GPT-2 tokens = 46 GB of text): the download is one process, so cores do not shorten it
(the network might bound it instead); tokenizing scales with --num-proc until the parent
process, which reads and writes for all workers, is busy full time. Rates for the projection
come from the difference between the two sizes, so start-up (imports) cancels out, and per
core means per CPU-second, so other jobs on a shared machine do not count.
"""

import argparse
import ast
import gzip
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.process_memory import run_measured  # noqa: E402 - needs the path above

BYTES_PER_TOKEN = 4.6  # FineWeb-Edu, GPT-2 tokens (dataset/pre_training/fineweb_edu.py)
FILE_TEXT_BYTES = 64_000_000
SAMPLE_10BT_BYTES = 10e9 * BYTES_PER_TOKEN
TEXT_SUFFIXES = (".md", ".rst", ".txt")
MAX_FILE_BYTES = 2_000_000  # larger .txt files are data (word lists, tables), not prose
MAX_PIECE_CHARS = 6_000  # long passages are cut at paragraphs into pieces of at most this


# ---------------------------------------------------------------- the corpus


def text_roots() -> list[Path]:
    import sysconfig

    roots = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])}
    roots |= {Path("/usr/share/doc"), Path("/usr/lib/python3")}
    return sorted(root.resolve() for root in roots if root.is_dir())


def is_prose(text: str) -> bool:
    letters = sum(char.isalpha() or char.isspace() for char in text[:20_000])
    return len(text) >= 200 and letters / min(len(text), 20_000) > 0.75


def passages_of(path: Path) -> list[str]:
    """Docstrings of a Python file, or the text of a documentation file."""
    try:
        if path.suffix == ".py":
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            return [
                doc
                for node in ast.walk(tree)
                if isinstance(node, nodes) and (doc := ast.get_docstring(node)) and len(doc) >= 200
            ]
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as file:
                text = file.read(MAX_FILE_BYTES)
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
        return [text] if is_prose(text) else []
    except (OSError, SyntaxError, ValueError, EOFError, gzip.BadGzipFile):
        return []


def collect_passages(cache: Path) -> list[tuple[str, str]]:
    """(source file, text) of every distinct passage; cached as jsonl."""
    if cache.is_file():
        return [tuple(json.loads(line)) for line in cache.read_text().splitlines()]
    seen, passages, started = set(), [], time.perf_counter()
    for root in text_roots():
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                path = Path(folder, name)
                if path.suffix not in (".py", ".gz", *TEXT_SUFFIXES):
                    continue
                for text in passages_of(path):
                    text = text.strip()
                    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
                    if digest not in seen:
                        seen.add(digest)
                        passages.append((str(path), text))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("".join(json.dumps(p) + "\n" for p in passages))
    megabytes = sum(len(t.encode()) for _, t in passages) / 1e6
    print(f"{len(passages):,} passages, {megabytes:.0f} MB, {time.perf_counter() - started:.0f} s")
    return passages


def pieces(passages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Passages cut at blank lines into pieces of at most MAX_PIECE_CHARS (longer paragraphs
    are cut anywhere)."""
    result = []
    for source, text in passages:
        piece = ""
        for paragraph in text.split("\n\n"):
            while len(paragraph) > MAX_PIECE_CHARS:
                result.append((source, paragraph[:MAX_PIECE_CHARS]))
                paragraph = paragraph[MAX_PIECE_CHARS:]
            if piece and len(piece) + len(paragraph) + 2 > MAX_PIECE_CHARS:
                result.append((source, piece))
                piece = ""
            piece = f"{piece}\n\n{paragraph}" if piece else paragraph
        if piece.strip():
            result.append((source, piece))
    return result


def documents(passages, total_bytes: int):
    """FineWeb-Edu rows until `total_bytes` of text; each pass over the passages groups them
    in a new seeded order."""
    passages = pieces(passages)
    produced, number = 0, 0
    for round_number in range(10_000):
        rng = random.Random(round_number)
        order = list(range(len(passages)))
        if round_number:
            rng.shuffle(order)
        parts, size, target = [], 0, rng.randint(500, 6000)
        for index in order:
            source, text = passages[index]
            parts.append(text)
            size += len(text.encode())
            if size < target:
                continue
            body = "\n\n".join(parts)
            score = rng.uniform(2.5, 5.0)
            yield {
                "text": body,
                "id": f"<urn:uuid:{hashlib.md5(str(number).encode()).hexdigest()}>",
                "dump": "CC-MAIN-2024-10",
                "url": f"file://{source}",
                "file_path": source,
                "language": "en",
                "language_score": 0.9,
                "token_count": math.ceil(len(body.encode()) / BYTES_PER_TOKEN),
                "score": score,
                "int_score": int(round(score)),
            }
            produced += size
            number += 1
            if produced >= total_bytes:
                return
            parts, size, target = [], 0, rng.randint(500, 6000)


def build_corpus(folder: Path, size_gb: float, file_bytes: int, work: Path) -> dict:
    """Parquet files of about `file_bytes` of text each, `size_gb` in all (kept)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = folder / "corpus.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if (info["size_gb"], info.get("file_bytes")) == (size_gb, file_bytes):
            return info
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    passages = collect_passages(work / "passages.jsonl")
    unique = sum(len(text.encode()) for _, text in passages)
    rows, size, files, total = [], 0, [], 0
    for row in documents(passages, int(size_gb * 1e9)):
        rows.append(row)
        size += len(row["text"].encode())
        if size >= file_bytes:
            files.append(write_file(folder, len(files), rows, size, pa, pq))
            total, rows, size = total + size, [], 0
    if rows:
        files.append(write_file(folder, len(files), rows, size, pa, pq))
        total += size
    info = {"size_gb": size_gb, "file_bytes": file_bytes, "files": files, "text_bytes": total}
    info["unique_bytes"] = unique
    done.write_text(json.dumps(info, indent=1))
    return info


def write_file(folder, index, rows, size, pa, pq) -> dict:
    path = folder / f"{index:03d}_00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    return {"path": str(path), "rows": len(rows), "text_bytes": size}


# ---------------------------------------------------------------- the measurements


def python(*args) -> list[str]:
    return ["nice", sys.executable, *map(str, args)]


def download(files: list[str], output: Path, log: Path) -> dict:
    run = run_measured(
        python(
            "-m",
            "dataset.pre_training.download_dataset",
            "--dataset",
            "fineweb-edu",
            "--source",
            "local",
            "--data-files",
            *files,
            "--output-dir",
            output,
            "--overwrite",
        ),
        log,
    )
    manifest = json.loads((output / "manifest.json").read_text())
    splits = manifest["splits"].values()
    docs, tokens = sum(s["rows"] for s in splits), sum(s["tokens"] for s in splits)
    seconds = run["seconds"]
    return {
        "step": "download",
        "text_mb": manifest["text_bytes"] / 1e6,
        "documents": docs,
        "seconds": seconds,
        "reading_seconds": manifest["seconds"],
        "docs_per_s": docs / seconds,
        "mb_per_s": manifest["text_bytes"] / 1e6 / seconds,
        "estimated_gpt2_tokens_per_s": tokens / seconds,
        "peak_rss_mb": run["largest_process_peak_rss_mb"],
        "tree_peak_rss_mb": run["tree_peak_rss_mb"],
        "cpu_seconds": run["tree_cpu_seconds"],
    }


def tokenize(raw: Path, tokenizer: Path, output: Path, num_proc: int, log: Path) -> dict:
    run = run_measured(
        python(
            "-m",
            "tokenizer.tokenize_dataset",
            "--dataset-dir",
            raw,
            "--tokenizer-path",
            tokenizer,
            "--output-dir",
            output,
            "--overwrite",
            "--num-proc",
            num_proc,
        ),
        log,
    )
    metas = [json.loads(p.read_text()) for p in sorted(output.glob("*/meta.json"))]
    shutil.rmtree(output)
    tokens = sum(meta["num_tokens"] for meta in metas)
    docs = sum(meta["num_documents"] for meta in metas)
    text_bytes = sum(meta["stats"]["text_bytes"] for meta in metas)
    seconds = run["seconds"]
    return {
        "step": f"tokenize --num-proc {num_proc}",
        "text_mb": text_bytes / 1e6,
        "documents": docs,
        "tokens": tokens,
        "seconds": seconds,
        "docs_per_s": docs / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_s_per_core": tokens / seconds / num_proc,
        "mb_per_s": text_bytes / 1e6 / seconds,
        "peak_rss_mb": run["largest_process_peak_rss_mb"],
        "tree_peak_rss_mb": run["tree_peak_rss_mb"],
        "parent_cpu_seconds": run["main_cpu_seconds"],
        "cpu_seconds": run["tree_cpu_seconds"],
        "num_proc": num_proc,
    }


def marginal(small: dict, large: dict, key: str = "seconds") -> float:
    """Seconds (or CPU seconds) per byte between the two sizes: start-up costs cancel out."""
    return (large[key] - small[key]) / ((large["text_mb"] - small["text_mb"]) * 1e6)


def projection(rows: list[dict]) -> list[str]:
    """Hours for sample-10BT (46 GB of text) on 8 and 32 cores, from the rates between the
    small and the large corpus (rows: download small, tokenize small, download large, ...).

    Per core means per CPU-second (the process tree's CPU time): on a shared machine the wall
    clock also holds the other jobs' time, which a dedicated 8- or 32-core machine would not."""
    download_small, tokenize_small, download_large, tokenize_large = rows
    download_wall = 1 / marginal(download_small, download_large)
    download_cpu = 1 / marginal(download_small, download_large, "cpu_seconds")
    tokenize_wall = 1 / marginal(tokenize_small, tokenize_large)
    per_core = 1 / marginal(tokenize_small, tokenize_large, "cpu_seconds")
    # the parent reads, merges and writes for every worker: its CPU per byte bounds the speed
    ceiling = 1 / marginal(tokenize_small, tokenize_large, "parent_cpu_seconds")
    download_hours = SAMPLE_10BT_BYTES / download_cpu / 3600
    lines = [
        f"rates between {download_small['text_mb']:.0f} and {download_large['text_mb']:.0f} MB "
        f"(start-up excluded): download {download_wall / 1e6:.1f} MB/s wall, "
        f"{download_cpu / 1e6:.1f} MB per CPU-second (one process); tokenize "
        f"{tokenize_wall / 1e6:.2f} MB/s wall with --num-proc {tokenize_large['num_proc']}, "
        f"{per_core / 1e6:.2f} MB per CPU-second; its parent process alone could serve "
        f"{ceiling / 1e6:.0f} MB/s",
        f"sample-10BT: ~{SAMPLE_10BT_BYTES / 1e9:.0f} GB of text; download {download_hours:.2f} h "
        "on any number of cores (one process; longer if the network is slower than that)",
    ]
    for cores in (8, 32):
        rate = min(per_core * cores, ceiling)
        hours = SAMPLE_10BT_BYTES / rate / 3600
        lines.append(
            f"{cores} cores: tokenize --num-proc {cores} at {rate / 1e6:.1f} MB/s: {hours:.2f} h; "
            f"download + tokenize {download_hours + hours:.2f} h"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="the large corpus (text GB)")
    parser.add_argument("--small-gb", type=float, default=0.25, help="the small one: its prefix")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count(), help="tokenize workers")
    parser.add_argument("--work-dir", default=str(REPO / "data" / "data_benchmark"))
    args = parser.parse_args()
    work = Path(args.work_dir)
    started = time.perf_counter()
    # at least two files in the small corpus, so the two sizes differ
    file_bytes = min(FILE_TEXT_BYTES, int(args.small_gb * 1e9 / 2))
    corpus = build_corpus(work / "corpus", args.size_gb, file_bytes, work)
    print(
        f"corpus: {len(corpus['files'])} files, {corpus['text_bytes'] / 1e9:.2f} GB of text "
        f"({corpus['unique_bytes'] / 1e9:.2f} GB unique), built in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    small, size = [], 0
    for entry in corpus["files"]:
        if size >= args.small_gb * 1e9:
            break
        small.append(entry["path"])
        size += entry["text_bytes"]
    every = [entry["path"] for entry in corpus["files"]]
    rows = []
    for name, files in (("small", small), ("large", every)):
        raw = work / f"raw_{name}"
        rows.append(download(files, raw, work / f"download_{name}.log"))
        print(json.dumps(rows[-1]), flush=True)
        tokenizer = work / "tokenizer.json"
        if not tokenizer.exists():
            run_measured(
                python(
                    "-m",
                    "tokenizer.train",
                    "--dataset-dir",
                    raw,
                    "--output-path",
                    tokenizer,
                    "--vocab-size",
                    32768,
                    "--max-chars",
                    50_000_000,
                ),
                work / "train.log",
            )
        rows.append(
            tokenize(
                raw,
                tokenizer,
                work / f"tokens_{name}",
                args.num_proc,
                work / f"tokenize_{name}.log",
            )
        )
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(raw)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\ncores: {os.cpu_count()}, load average {load}, tokenize --num-proc {args.num_proc}")
    print(
        "| step | text MB | documents | seconds | CPU seconds | docs/s | MB/s | tokens/s | "
        "peak RSS MB (largest process / tree) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        tokens = row.get("tokens_per_s", row.get("estimated_gpt2_tokens_per_s"))
        print(
            f"| {row['step']} | {row['text_mb']:,.0f} | {row['documents']:,} | "
            f"{row['seconds']:.0f} | {row['cpu_seconds']:.0f} | {row['docs_per_s']:,.0f} | "
            f"{row['mb_per_s']:.1f} | {tokens:,.0f} | "
            f"{row['peak_rss_mb']:.0f} / {row['tree_peak_rss_mb']:.0f} |"
        )
    print()
    for line in projection(rows):
        print(line)
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
