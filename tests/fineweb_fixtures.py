"""A tiny FineWeb-Edu on disk (parquet files with the Hub's exact columns and types, several row
groups each) and a stand-in for the Hub that serves those files."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq

from dataset.pre_training import fineweb_edu

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SENTENCE = (
    "the cell divides into two daughter cells during mitosis while energy flows through "
    "photosynthesis in green plants students learn fractions decimals and the history of "
    "ancient rome water cycles evaporate condense and fall as rain"
)
WORDS = SENTENCE.split()
SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),
        ("score", pa.float64()),
        ("int_score", pa.int64()),
    ]
)


def fineweb_rows(count: int, seed: int = 0) -> list[dict]:
    """Rows shaped like FineWeb-Edu's, with a few an honest download must drop: empty and
    whitespace-only texts, a missing text; int_score 2..5 (score rounded)."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 300))]
        text = " ".join(words).capitalize() + "."
        if index % 53 == 7:
            text = "  \n "
        elif index % 71 == 9:
            text = None
        elif index % 5 == 0:
            text = f"  {text}\n\n"  # surrounding whitespace: stripped
        score = rng.uniform(1.6, 5.0)
        rows.append(
            {
                "text": text,
                "id": f"<urn:uuid:{seed:04d}-{index:06d}>",
                "dump": "CC-MAIN-2024-10",
                "url": f"https://example.org/{seed}/{index}",
                "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/x.warc.gz",
                "language": "en",
                "language_score": 0.95,
                "token_count": int(len(words) * 1.3) + 1,
                "score": score,
                "int_score": int(round(score)),
            }
        )
    return rows


def write_fineweb(folder: Path, files: int = 3, rows_per_file: int = 300) -> list[Path]:
    """`files` parquet files of FineWeb-Edu rows, several row groups each, like sample/10BT."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(files):
        path = folder / f"{index:03d}_00000.parquet"
        table = pa.Table.from_pylist(fineweb_rows(rows_per_file, seed=index), schema=SCHEMA)
        pq.write_table(table, path, row_group_size=64)
        paths.append(path)
    return paths


def all_rows(paths: list[Path]) -> list[dict]:
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def expected_documents(paths: list[Path], min_int_score: int | None = None) -> list[dict]:
    """What the download should keep, in stream order: stripped, non-empty, scored."""
    kept = []
    for row in all_rows(paths):
        text = (row["text"] or "").strip()
        if text and (min_int_score is None or row["int_score"] >= min_int_score):
            kept.append({"text": text, "tokens": row["token_count"]})
    return kept


class FakeHub:
    """Stands in for the Hub's FineWeb-Edu: `HfApi.dataset_info` lists the local parquet files
    under sample/10BT/ at a fixed commit and `HfFileSystem().open` opens one where it lies.
    Records every call."""

    def __init__(self, paths: list[Path]):
        self.paths = {f"sample/10BT/{path.name}": path for path in paths}
        self.calls: list[tuple] = []

    def dataset_info(self, repo_id, revision=None, **kwargs):
        self.calls.append(("dataset_info", repo_id, revision))
        siblings = [
            SimpleNamespace(rfilename=name, size=path.stat().st_size)
            for name, path in self.paths.items()
        ]
        return SimpleNamespace(sha=COMMIT, siblings=siblings)

    def open_remote(self, path: str, mode: str = "rb"):
        prefix = f"datasets/{fineweb_edu.REPO_ID}@{COMMIT}/"
        assert path.startswith(prefix), path
        self.calls.append(("remote", path.removeprefix(prefix)))
        return open(self.paths[path.removeprefix(prefix)], mode)


def install_fake_hub(monkeypatch, paths: list[Path]) -> FakeHub:
    """The fake Hub, and batches of 16 rows (not 1000) so the tiny shards close often."""
    hub = FakeHub(paths)
    monkeypatch.setattr(fineweb_edu, "BATCH_ROWS", 16)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", hub.dataset_info)
    monkeypatch.setattr(
        huggingface_hub, "HfFileSystem", lambda: SimpleNamespace(open=hub.open_remote)
    )
    return hub


def snapshot(output: Path) -> dict[str, bytes]:
    """Every file of a download folder (manifest.json without its times and paths)."""
    import json

    files = {}
    for path in sorted(output.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(output))] = path.read_bytes()
    manifest = json.loads(files.pop("manifest.json"))
    for key in ("created_at", "seconds"):
        manifest.pop(key)
    manifest["arguments"].pop("output_dir")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files
