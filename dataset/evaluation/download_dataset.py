"""The evaluation data step: a copy of what the named lm-eval tasks read, once, then offline.

    python3 -m dataset.evaluation.download_dataset --output-dir data/evaluation
    python3 -m dataset.evaluation.download_dataset --tasks core,gsm8k,mmlu

Tiny CPU example, no network (the sample world's test is generated; without a copy it is
generated whenever a task reads it):
    python3 -m dataset.evaluation.download_dataset --tasks sample_world

Tasks are lm-evaluation-harness's, plus the YAML files in dataset/evaluation/tasks/ (the `core`
group, `sample_world`, ARC's letter forms). Building a task loads its dataset with
`datasets.load_dataset(dataset_path, dataset_name)`; `local_copies` answers those calls from
`<output-dir>/<dataset_path>/<dataset_name or default>/` (a `save_to_disk` DatasetDict with a
manifest.json), and this command makes the copies that are missing. From then on
`python3 -m evaluation` and the training scripts' in-run scores read only these copies.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import datasets
import yaml

from common.atomic import atomic_write_text, locked_output_directory
from common.errors import ArgumentParser, UserError, run_cli
from dataset.pipeline import hub_input, one_line
from dataset.sample_world.multiple_choice import multiple_choice_rows

MODULE = "dataset.evaluation.download_dataset"
DEFAULT_OUTPUT = "data/evaluation"
TASKS_DIR = Path(__file__).resolve().with_name("tasks")  # our task YAML files
SAMPLE = "sample_world"  # the dataset_path of the sample world's test: generated, not fetched
LOCAL_BUILDERS = ("arrow", "csv", "json", "pandas", "parquet", "text")  # files a task names


def task_names(spec: str) -> list[str]:
    """Comma-separated task and group names, `core` replaced by its tasks, each name once."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--tasks is empty; give task names or a group, e.g. --tasks core")
    core = yaml.safe_load((TASKS_DIR / "core.yaml").read_text())["task"]
    return list(dict.fromkeys(n for name in names for n in (core if name == "core" else [name])))


@functools.cache
def task_manager(names: tuple[str, ...]):
    """lm-eval's index of tasks that knows `names`: when they are all tasks in our folder or in
    lm-eval folders whose name starts theirs, those folders' (a second), else all of lm-eval's
    (~10 s, once); a name it does not know is a one-line error with the closest known names."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    builtin = Path(lm_eval.__file__).parent / "tasks"
    folders = [d for d in builtin.iterdir() if any(n.startswith(d.name) for n in names)]
    manager = TaskManager(include_path=[*folders, TASKS_DIR], include_defaults=False)
    index = manager.task_index
    if not all(n in index and index[n].kind in (Kind.TASK, Kind.PY_TASK) for n in names):
        manager = every_task()  # a group may name tasks of other folders
    for name in names:
        if name not in manager.task_index:
            close = difflib.get_close_matches(name, ["core", *manager.all_tasks], n=5, cutoff=0.6)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise UserError(f"unknown task {name!r}{hint} (`lm-eval ls tasks` lists them all)")
    return manager


@functools.cache
def every_task():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=TASKS_DIR)


def copy_folder(data_dir: str | Path, path: str, name: str | None) -> Path:
    return Path(data_dir) / path / (name or "default")


@contextlib.contextmanager
def local_copies(
    data_dir: str | Path, fetch: bool = False, overwrite: bool = False, seed: int = 0
) -> Iterator[None]:
    """While lm-eval builds tasks, its `datasets.load_dataset(path, name, ...)` calls read our
    copies in data_dir (fetch: making the missing ones first, or all of them with overwrite).
    A missing copy is a MissingCopy error; a task over files it names reads them as it says."""
    load_dataset, made = datasets.load_dataset, set()

    def load(path, name=None, **kwargs):
        if path in LOCAL_BUILDERS or Path(path).exists():
            return load_dataset(path, name, **kwargs)
        folder = copy_folder(data_dir, path, name)
        if fetch and folder not in made and (overwrite or not folder.exists()):
            write_copy(folder, path, name, kwargs, load_dataset, seed)
            made.add(folder)
        elif fetch and folder not in made:
            print(f"{folder}: already there, kept (--overwrite replaces it)")
            made.add(folder)
        if not folder.exists() and path == SAMPLE:  # embedded: generated when it has no copy
            return sample_test(seed)
        if not folder.exists():
            raise MissingCopy(folder)
        try:
            return datasets.load_from_disk(str(folder))
        except Exception as error:  # not a save_to_disk folder, or a damaged one
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise UserError(
                f"{folder} is not a saved dataset ({first}); re-create it with "
                f"`python3 -m {MODULE} --overwrite`"
            ) from None

    datasets.load_dataset = load  # lm-eval's tasks call it as datasets.load_dataset
    try:
        yield
    finally:
        datasets.load_dataset = load_dataset


class MissingCopy(UserError):
    def __init__(self, folder: Path):
        super().__init__(f"{folder} not found")
        self.folder = folder

    def naming(self, tasks: str, data_dir) -> UserError:
        """The error a user sees: the missing folder and the command that makes it."""
        command = f"python3 -m {MODULE} --tasks {tasks} --output-dir {data_dir}"
        return UserError(f"{self.folder} not found; make it with `{command}` (online)")


def sample_test(seed: int) -> datasets.DatasetDict:
    """The sample world's multiple-choice test and its few-shot split (items of the same facts)."""
    splits = {split: multiple_choice_rows(seed, split) for split in ("train", "test")}
    return datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in splits.items()})


def write_copy(
    folder: Path, path: str, name: str | None, kwargs: dict, load_dataset, seed: int
) -> None:
    """Fetch dataset `path` (config `name`) from the Hub, or generate the sample world's test,
    and save it at `folder` with a manifest, atomically."""
    with locked_output_directory(folder, overwrite=True, what="evaluation data") as temp:
        if path == SAMPLE:
            loaded = sample_test(seed)
        else:
            try:
                loaded = load_dataset(path, name, **kwargs)
            except Exception as error:  # no network, a renamed dataset, an outage: one line
                raise UserError(
                    f"could not fetch {path} ({name}) from the Hub: {one_line(error)}"
                ) from None
        loaded.save_to_disk(str(temp))
        manifest = {
            **hub_input(path, loaded, name=name),
            "seed": seed if path == SAMPLE else None,
            "created_by": f"python3 -m {MODULE}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_text(temp / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    print(f"{folder}: " + ", ".join(f"{s} {n}" for s, n in manifest["splits"].items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=f"python3 -m {MODULE}",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT, help="the copies go in here")
    parser.add_argument(
        "--tasks",
        default="core,sample_world",
        help="comma-separated lm-eval task or group names (core: our six zero-shot tasks); "
        "the copies of every dataset they read are made",
    )
    parser.add_argument("--overwrite", action="store_true", help="fetch copies already there again")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample world's test")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = task_names(args.tasks)
    manager = task_manager(tuple(names))
    with local_copies(args.output_dir, fetch=True, overwrite=args.overwrite, seed=args.seed):
        for name in names:
            manager.load(name)
    return 0


if __name__ == "__main__":
    run_cli(main)
