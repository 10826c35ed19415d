"""The raw datasets that dataset/ writes (`save_to_disk` folders), as the tokenizer steps read
them: a split's Arrow files are streamed with plain reads, batch by batch, so memory stays flat
however large the corpus (`datasets` would memory-map them, and the pages it walks count in the
process's memory). `load_datasets` (random access through `datasets`) is for the viewer.
"""

import json
from pathlib import Path

from common.errors import UserError

COLUMNS = {"pre_training": ("text",), "sft": ("messages",), "dpo": ("prompt", "chosen", "rejected")}
DOWNLOAD_HINT = (
    "create it with `python3 -m dataset.pre_training.download_dataset --output-dir DIR` "
    "(or the sft/dpo equivalents)"
)


class RawSplit:
    """One split folder written by `save_to_disk`: its Arrow files, read lazily."""

    def __init__(self, name: str, directory: Path):
        self.name, self.directory = name, directory
        try:
            state = json.loads((directory / "state.json").read_text())
            self.files = [directory / entry["filename"] for entry in state["_data_files"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(
                f"{directory} is not a split saved by `save_to_disk` ({error}); {DOWNLOAD_HINT}"
            ) from None
        if not self.files:
            raise UserError(f"{directory} lists no data files; {DOWNLOAD_HINT}")
        self.schema = next(self.batches(schema_only=True))
        self.column_names = self.schema.names
        self._num_rows = None

    def batches(self, schema_only: bool = False):
        """The record batches of every file in order (or, with schema_only, the schema)."""
        import pyarrow as pa  # here: tokenize_dataset's workers import this module, not pyarrow

        for path in self.files:
            try:
                with pa.OSFile(str(path)) as source:
                    reader = pa.ipc.open_stream(source)
                    if schema_only:
                        yield reader.schema
                        return
                    yield from reader
            except (OSError, pa.ArrowException) as error:
                raise UserError(f"cannot read {path} ({error}); download it again") from None

    def __len__(self) -> int:
        if self._num_rows is None:
            self._num_rows = sum(batch.num_rows for batch in self.batches())
        return self._num_rows

    def column_bytes(self, columns) -> int:
        """Bytes the Arrow buffers of `columns` hold: about the UTF-8 size of their text."""
        return sum(batch.column(c).nbytes for batch in self.batches() for c in columns)

    def iter_rows(self, columns, batch_rows: int):
        """(first row, {column: values}) of consecutive batches of at most `batch_rows` rows."""
        first_row = 0
        for batch in self.batches():
            for start in range(0, batch.num_rows, batch_rows):
                chunk = batch.slice(start, batch_rows)
                yield first_row, {name: chunk.column(name).to_pylist() for name in columns}
                first_row += chunk.num_rows


def split_folders(path: Path, allow_single_split: bool = True) -> dict[str, Path]:
    """{split: folder} of a DatasetDict folder, or {its name: folder} of one split folder."""
    if not path.is_dir():
        raise UserError(f"dataset folder {path} not found; {DOWNLOAD_HINT}")
    if (path / "dataset_dict.json").is_file():
        try:
            names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        except (ValueError, KeyError) as error:
            raise UserError(f"{path}/dataset_dict.json is damaged ({error})") from None
        return {name: path / name for name in names}
    if (path / "state.json").is_file() and allow_single_split:
        return {path.name: path}
    if (path / "state.json").is_file():
        raise UserError(f"{path} is a single split folder; pass the dataset folder above it")
    what = "is empty" if not any(path.iterdir()) else "holds no saved dataset"
    raise UserError(
        f"dataset folder {path} {what} (no dataset_dict.json or state.json); {DOWNLOAD_HINT}"
    )


def open_splits(path, allow_single_split: bool = True) -> dict[str, RawSplit]:
    folders = split_folders(Path(path), allow_single_split)
    return {name: RawSplit(name, folder) for name, folder in folders.items()}


def load_datasets(path) -> dict:
    """Like `open_splits`, as `datasets.Dataset`s (random access by row)."""
    import datasets

    try:
        return {
            name: datasets.load_from_disk(str(folder))
            for name, folder in split_folders(Path(path)).items()
        }
    except Exception as error:  # damaged metadata or missing Arrow files
        raise UserError(f"cannot read the dataset at {path}: {error}") from None


def check_columns(splits: dict, stage: str, path) -> None:
    """UserError naming the split and what it lacks, if a split lacks a column `stage` data
    needs or holds the wrong type in it (a `text` column of numbers would give 0 tokens)."""
    for name, split in splits.items():
        schema = split.schema if isinstance(split, RawSplit) else split.data.schema
        missing = [column for column in COLUMNS[stage] if column not in schema.names]
        if missing:
            needs = ", ".join(map(repr, COLUMNS[stage]))
            raise UserError(
                f"{Path(path) / name} has columns {schema.names} but {stage} data needs {needs} "
                f"(missing {missing}); check --stage and --dataset-dir"
            )
        for column in COLUMNS[stage]:
            check_type(schema.field(column).type, column, Path(path) / name)


def check_type(column_type, column: str, where: Path) -> None:
    """UserError unless `text` holds strings and a chat column lists of {role, content}."""
    import pyarrow as pa

    strings = (pa.string(), pa.large_string())
    if column == "text":
        ok, wanted = column_type in strings, "strings (one document per row)"
    else:
        item = getattr(column_type, "value_type", None)  # what a list holds
        is_struct = item is not None and pa.types.is_struct(item)
        fields = {field.name: field.type for field in item} if is_struct else {}
        ok = fields.get("role") in strings and fields.get("content") in strings
        wanted = "lists of {role, content} messages with string fields"
    if not ok:
        raise UserError(f"{where}: column {column!r} holds {column_type} values, not {wanted}")
