"""Reading the raw datasets that `dataset/` writes: open them, check their columns, stream rows.

A raw dataset is a `save_to_disk` DatasetDict (`train/ validation/ test/`) or one split folder.
Rows are streamed from the Arrow files with plain reads, batch by batch, instead of through a
memory map: a memory-mapped corpus counts every page touched towards the process's resident
memory, so streaming is what keeps peak memory flat however large the corpus is.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError

if TYPE_CHECKING:  # imported lazily below: worker processes re-import callers of this module
    import datasets

# The columns each tokenizer mode reads (see DESIGN.md, "Data contract").
COLUMNS_BY_MODE = {
    "pre_training": ("text",),
    "post_training_sft": ("messages",),
    "post_training_dpo": ("prompt", "chosen", "rejected"),
}
COLUMN_HELP = {
    "pre_training": "'text' (a string per document)",
    "post_training_sft": "'messages' (a list of {role, content})",
    "post_training_dpo": "'prompt', 'chosen' and 'rejected' (lists of {role, content})",
}
DOWNLOAD_HINT = (
    "create it with `python3 -m dataset.pre_training.download_dataset --output-dir DIR` "
    "(or the sft/dpo equivalents)"
)


def load_splits(path: str | Path, allow_single_split: bool = True) -> dict[str, "datasets.Dataset"]:
    """{split: Dataset} of a saved DatasetDict folder, or {folder name: Dataset} of one split."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"dataset folder {path} not found; {DOWNLOAD_HINT}")
    is_dict = (path / "dataset_dict.json").is_file()
    is_split = (path / "state.json").is_file()
    if not is_dict and not is_split:
        what = "is empty" if not any(path.iterdir()) else "holds no saved dataset"
        raise UserError(
            f"dataset folder {path} {what} (no dataset_dict.json or state.json); {DOWNLOAD_HINT}"
        )
    if is_split and not allow_single_split:
        raise UserError(
            f"{path} is a single split folder; pass the dataset folder that holds "
            "train/ validation/ test/ (its parent)"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # damaged metadata or missing Arrow files
        raise UserError(f"cannot read the dataset at {path}: {error}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {path.name: loaded}
    if not splits:
        raise UserError(f"dataset folder {path} has no splits; {DOWNLOAD_HINT}")
    return splits


def check_columns(splits: dict[str, "datasets.Dataset"], mode: str, path: str | Path) -> None:
    """UserError naming the split, the mode and the columns it needs, if any split lacks one."""
    for name, dataset in splits.items():
        missing = [c for c in COLUMNS_BY_MODE[mode] if c not in dataset.column_names]
        if missing:
            raise UserError(
                f"{Path(path) / name} has columns {dataset.column_names} but --tokenizer-mode "
                f"{mode} needs {COLUMN_HELP[mode]}; missing {missing}. Check --tokenizer-mode "
                "and --dataset-dir"
            )


def iter_rows(
    dataset: "datasets.Dataset", columns: tuple[str, ...] | list[str], batch_rows: int
) -> Iterator[dict[str, list]]:
    """Yield {column: values} for consecutive batches of at most `batch_rows` rows, in order."""
    import pyarrow as pa

    files = [entry["filename"] for entry in dataset.cache_files]
    if not files or dataset._indices is not None:
        # In-memory or re-indexed datasets (never produced by save_to_disk): let datasets do it.
        yield from dataset.select_columns(list(columns)).iter(batch_size=batch_rows)
        return
    seen = 0
    for filename in files:
        with pa.OSFile(filename) as source:
            for record_batch in pa.ipc.open_stream(source):
                for start in range(0, record_batch.num_rows, batch_rows):
                    chunk = record_batch.slice(start, batch_rows)
                    seen += chunk.num_rows
                    yield {name: chunk.column(name).to_pylist() for name in columns}
    if seen != len(dataset):
        raise UserError(
            f"the Arrow files of {Path(files[0]).parent} hold {seen} rows but the dataset says "
            f"{len(dataset)}; the folder is damaged, download it again"
        )


def column_bytes(dataset: "datasets.Dataset", columns) -> int:
    """Bytes held by `columns` (read from Arrow buffer sizes, no data is touched): about the
    UTF-8 size of their text, for character budgets."""
    return sum(dataset.data.column(name).nbytes for name in columns)
