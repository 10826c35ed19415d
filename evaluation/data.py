"""A task's examples, read from its copy on disk (data/evaluation/<dataset>/, written by
`python3 -m dataset.evaluation.download_dataset`).

A missing copy is fetched once into the data folder (the network is needed then), except the
sample world's, which is generated in memory. `--limit N` keeps the first N examples of the
evaluation split, in the dataset's order, as lm-eval's --limit does.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from common.errors import UserError
from dataset.evaluation import download_dataset
from dataset.evaluation.sources import SAMPLE, SOURCES
from evaluation.tasks import Task

DEFAULT_DATA_DIR = "data/evaluation"


def load_dataset_dict(
    name: str, data_dir: str | Path, sample_seed: int = 0, download: bool = True
) -> datasets.DatasetDict:
    """The copy of dataset `name` in data_dir; fetched (or generated) when it is not there."""
    folder = Path(data_dir) / name
    if not folder.exists():
        if name == SAMPLE:
            return download_dataset.sample_dataset(sample_seed)
        if not download:
            raise UserError(f"{folder} not found; run {download_command(name, data_dir)}")
        print(f"{folder} not found: fetching {SOURCES[name].hub_id} once (needs the network)")
        try:
            download_dataset.write(name, data_dir, overwrite=False)
        except UserError as error:
            cause = error.__cause__ or error  # load_hub's: the datasets library's own error
            reason = (str(cause).strip().splitlines() or [""])[0][:160]
            raise UserError(
                f"{folder} not found and {SOURCES[name].hub_id} could not be fetched "
                f"({type(cause).__name__}: {reason}); run {download_command(name, data_dir)} "
                f"where there is a network, then copy {folder} here"
            ) from None
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as error:  # not a save_to_disk folder, or a damaged one
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(
            f"{folder} is not a saved dataset ({first}); re-create it with "
            f"{download_command(name, data_dir)} --overwrite"
        ) from None
    source = SOURCES[name]
    for split in source.splits:
        if not isinstance(loaded, datasets.DatasetDict) or split not in loaded:
            raise UserError(f"{folder} has no {split} split; re-create it with --overwrite")
        missing = [column for column in source.columns if column not in loaded[split].column_names]
        if missing:
            raise UserError(
                f"{folder}/{split} has no column {', '.join(missing)}: it is not the "
                f"{source.hub_id} copy; re-create it with {download_command(name, data_dir)} "
                "--overwrite"
            )
    return loaded


def download_command(name: str, data_dir: str | Path) -> str:
    return (
        f"`python3 -m dataset.evaluation.download_dataset --output-dir {data_dir} "
        f"--datasets {name}`"
    )


def task_docs(
    task: Task,
    dataset_dict: datasets.DatasetDict,
    limit: int | None,
    with_fewshot: bool,
) -> tuple[list[dict], list[dict] | None, int]:
    """(processed evaluation docs, processed few-shot docs or None, the split's full size)."""
    split = dataset_dict[task.eval_split]
    size = len(split)
    if size == 0:
        raise UserError(f"{task.name}: its {task.eval_split} split has no examples")
    if limit is not None:
        split = split.select(range(min(limit, size)))
    docs = [task.process_doc(doc) for doc in split.to_list()]
    fewshot = None
    if with_fewshot and task.fewshot_split:
        fewshot = [task.process_doc(doc) for doc in dataset_dict[task.fewshot_split].to_list()]
    return docs, fewshot, size
