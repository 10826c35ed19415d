"""Reading the raw datasets that `dataset/` writes: open them, check their columns, stream rows.

A raw dataset is a `save_to_disk` DatasetDict (`train/ validation/ test/`) or one split folder.
Rows are streamed from its Arrow files with plain reads, batch by batch. `datasets` itself
memory-maps the files and, to open them, walks every record batch through the memory map,
which leaves a part of the corpus counted in the process's resident memory; reading the files
directly is what keeps peak memory flat however large the corpus is. `load_datasets` (random
access through `datasets`) is for the viewer, which reads one row at a time.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError

if TYPE_CHECKING:  # imported lazily: worker processes re-import the modules that import this one
    import datasets
    import pyarrow as pa

# The columns each stage's data is made from: what the download_dataset steps write.
COLUMNS_BY_STAGE = {
    "pre_training": ("text",),
    "sft": ("messages",),
    "dpo": ("prompt", "chosen", "rejected"),
}
COLUMN_HELP = {
    "pre_training": "'text' (a string per document)",
    "sft": "'messages' (a list of {role, content})",
    "dpo": "'prompt', 'chosen' and 'rejected' (lists of {role, content})",
}
DOWNLOAD_HINT = (
    "create it with `python3 -m dataset.pre_training.download_dataset --output-dir DIR` "
    "(or the sft/dpo equivalents)"
)


@dataclass
class RawSplit:
    """One split folder written by `save_to_disk`: its Arrow files and columns, read lazily."""

    name: str
    directory: Path
    files: list[Path]
    column_names: list[str]
    schema: "pa.Schema"
    _num_rows: int | None = None
    _column_bytes: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        if self._num_rows is None:
            self._scan()
        return self._num_rows

    def column_bytes(self, columns) -> int:
        """Bytes the Arrow buffers of `columns` hold: about the UTF-8 size of their text."""
        if self._num_rows is None:
            self._scan()
        return sum(self._column_bytes.get(name, 0) for name in columns)

    def _record_batches(self):
        import pyarrow as pa

        for path in self.files:
            try:
                with pa.OSFile(str(path)) as source:
                    yield from pa.ipc.open_stream(source)
            except (OSError, pa.ArrowException) as error:
                raise UserError(
                    f"cannot read {path} ({error}); the dataset is damaged, download it again"
                ) from None

    def _scan(self) -> None:
        """Count rows and column bytes in one streaming pass (reads, no memory map)."""
        rows, sizes = 0, dict.fromkeys(self.column_names, 0)
        for batch in self._record_batches():
            rows += batch.num_rows
            for name in self.column_names:
                sizes[name] += batch.column(name).nbytes
        self._num_rows, self._column_bytes = rows, sizes

    def iter_rows(self, columns, batch_rows: int) -> Iterator[dict[str, list]]:
        """Yield {column: values} for consecutive batches of at most `batch_rows` rows, in order."""
        for record_batch in self._record_batches():
            for start in range(0, record_batch.num_rows, batch_rows):
                chunk = record_batch.slice(start, batch_rows)
                yield {name: chunk.column(name).to_pylist() for name in columns}


def _open_split(directory: Path, name: str) -> RawSplit:
    import pyarrow as pa

    try:
        state = json.loads((directory / "state.json").read_text())
        files = [directory / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{directory} is not a split saved by `save_to_disk` ({error}); {DOWNLOAD_HINT}"
        ) from None
    if not files:
        raise UserError(f"{directory} lists no data files; {DOWNLOAD_HINT}")
    try:
        with pa.OSFile(str(files[0])) as source:
            schema = pa.ipc.open_stream(source).schema
    except (OSError, pa.ArrowException) as error:
        raise UserError(f"cannot read {files[0]} ({error}); download the dataset again") from None
    return RawSplit(name, directory, files, column_names=schema.names, schema=schema)


def _split_folders(path: Path, allow_single_split: bool) -> dict[str, Path]:
    if not path.is_dir():
        raise UserError(f"dataset folder {path} not found; {DOWNLOAD_HINT}")
    if (path / "dataset_dict.json").is_file():
        try:
            names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as error:
            raise UserError(f"{path}/dataset_dict.json is damaged ({error})") from None
        if not names:
            raise UserError(f"dataset folder {path} has no splits; {DOWNLOAD_HINT}")
        return {name: path / name for name in names}
    if (path / "state.json").is_file():
        if not allow_single_split:
            raise UserError(
                f"{path} is a single split folder; pass the dataset folder that holds "
                "train/ validation/ test/ (its parent)"
            )
        return {path.name: path}
    what = "is empty" if not any(path.iterdir()) else "holds no saved dataset"
    raise UserError(
        f"dataset folder {path} {what} (no dataset_dict.json or state.json); {DOWNLOAD_HINT}"
    )


def open_splits(path: str | Path, allow_single_split: bool = True) -> dict[str, RawSplit]:
    """{split: RawSplit} of a saved DatasetDict folder, or {folder name: RawSplit} of one split."""
    folders = _split_folders(Path(path), allow_single_split)
    return {name: _open_split(folder, name) for name, folder in folders.items()}


def load_datasets(path: str | Path) -> dict[str, "datasets.Dataset"]:
    """Like `open_splits`, as `datasets.Dataset`s (random access by row; memory-mapped)."""
    import datasets

    path = Path(path)
    folders = _split_folders(path, allow_single_split=True)
    try:
        return {name: datasets.load_from_disk(str(folder)) for name, folder in folders.items()}
    except Exception as error:  # damaged metadata or missing Arrow files
        raise UserError(f"cannot read the dataset at {path}: {error}") from None


def check_columns(splits: dict, stage: str, path: str | Path) -> None:
    """UserError naming the split, the stage and the columns it needs, if any split lacks one
    or holds the wrong type in it (a `text` column of numbers would give 0 tokens)."""
    for name, split in splits.items():
        missing = [c for c in COLUMNS_BY_STAGE[stage] if c not in split.column_names]
        if missing:
            raise UserError(
                f"{Path(path) / name} has columns {split.column_names} but {stage} data needs "
                f"{COLUMN_HELP[stage]}; missing {missing}. Check --stage and --dataset-dir"
            )
        check_column_types(split, COLUMNS_BY_STAGE[stage], Path(path) / name)


def check_column_types(split, columns, where: Path) -> None:
    """UserError if `text` is not a string column, or a chat column not a list of messages.

    `split` is a RawSplit or a `datasets.Dataset` (both carry an Arrow schema)."""
    import pyarrow as pa

    schema = split.schema if isinstance(split, RawSplit) else split.data.schema
    for column in columns:
        column_type = schema.field(column).type
        if column == "text":
            ok = pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
            wanted = "strings (one document per row)"
        else:
            ok = _is_message_list(column_type)
            wanted = "lists of {role, content} messages with string fields"
        if not ok:
            raise UserError(
                f"{where}: column {column!r} holds {column_type} values, not {wanted}; "
                "make the dataset with a download_dataset step, or fix that column"
            )


def _is_message_list(column_type) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(column_type) or pa.types.is_large_list(column_type)):
        return False
    item = column_type.value_type
    if not pa.types.is_struct(item):
        return False
    fields = {item.field(i).name: item.field(i).type for i in range(item.num_fields)}
    return all(
        name in fields
        and (pa.types.is_string(fields[name]) or pa.types.is_large_string(fields[name]))
        for name in ("role", "content")
    )
