"""Which tasks a run scores (evaluation/tasks.py) and our own task YAML files
(dataset/evaluation/tasks/): `core`, ARC's letter forms for chat models, unknown names with the
closest known ones, any lm-eval task or group, missing copies, and the figures read back."""

import lm_eval.utils
import pytest
from evaluation_fixtures import ARC_EVAL, CORE, write_evaluation_data
from lm_eval.api.model import LM

from common.errors import UserError
from dataset.evaluation.download_dataset import task_manager
from evaluation.tasks import (
    LETTER_TASKS,
    compiled_template,
    evaluate_tasks,
    load_tasks,
    metric_values,
    render_template,
    resolve_tasks,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_evaluation_data(tmp_path_factory.mktemp("data"))


def test_core_is_the_six_tasks_and_the_letter_forms_for_chat_models():
    assert resolve_tasks("core") == list(CORE)
    assert resolve_tasks("piqa,core") == ["piqa", *(name for name in CORE if name != "piqa")]
    chat = resolve_tasks("core,sample_world", chat=True)
    assert chat == [*CORE, "sample_world", *LETTER_TASKS]
    assert resolve_tasks("arc_easy", chat=True) == ["arc_easy"]  # letters come with core only
    with pytest.raises(UserError, match="--tasks is empty"):
        resolve_tasks(" , ")


def test_unknown_names_get_the_closest_and_any_lm_eval_name_works():
    with pytest.raises(UserError, match="unknown task 'winogrand'; closest: winogrande"):
        resolve_tasks("core,winogrand")
    assert resolve_tasks("mmlu,gsm8k") == ["mmlu", "gsm8k"]  # a group, from all of lm-eval's
    assert task_manager(("mmlu", "gsm8k")).task_index["mmlu"].kind.name == "GROUP"
    assert len(task_manager(tuple(CORE)).all_tasks) < 1000  # core: a few folders, not 14,000


def test_letter_form_lists_the_options_and_scores_the_letters(data_dir):
    tasks, _ = load_tasks(["arc_easy_letters"], data_dir)
    task = tasks["tasks"]["arc_easy_letters"]
    doc = ARC_EVAL[1]
    assert task.doc_to_text(doc) == (
        "Question: What happens to water when it freezes?\nA. It becomes a gas.\n"
        "B. It becomes a solid.\nC. It disappears.\nAnswer:"
    )
    assert task.doc_to_choice(doc) == ["A", "B", "C"] and task.doc_to_target(doc) == 1
    assert task.doc_to_choice(ARC_EVAL[3]) == list("ABCDE")
    assert task.doc_to_target(ARC_EVAL[2]) == 2  # digit labels


def test_sample_world_reads_the_generated_test_without_a_copy(tmp_path):
    tasks, missing = load_tasks(["sample_world"], tmp_path)
    task = tasks["tasks"]["sample_world"]
    doc = task.test_docs()[0]
    assert missing == [] and len(task.test_docs()) == 280 and len(task.fewshot_docs()) == 280
    assert task.doc_to_text(doc) == doc["question"] and task.doc_to_target(doc) == doc["answer"]
    assert task.doc_to_choice(doc) == doc["choices"]


def test_a_missing_copy_names_the_command_or_is_left_out(data_dir, tmp_path):
    with pytest.raises(UserError) as error:
        load_tasks(["piqa"], tmp_path)
    assert f"--tasks piqa --output-dir {tmp_path}" in str(error.value)
    assert "python3 -m dataset.evaluation.download_dataset" in str(error.value)
    tasks, missing = load_tasks(["piqa", "gsm8k", "hellaswag"], tmp_path, skip_missing=True)
    assert missing == ["piqa", "gsm8k", "hellaswag"] and not tasks["tasks"]
    tasks, missing = load_tasks(["piqa", "hellaswag"], data_dir)
    assert missing == [] and set(tasks["tasks"]) == {"piqa", "hellaswag"}


def test_metric_values_keep_filters_and_standard_errors():
    results = {
        "results": {
            "piqa": {"alias": "piqa", "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 3},
            "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
        }
    }
    assert metric_values(results) == [
        ("piqa", "acc", 0.5, 0.1),
        ("gsm8k", "exact_match,strict-match", 0.25, None),
    ]


class Recorder(LM):
    """An LM that notes which apply_template lm-eval has while it asks for scores."""

    def __init__(self):
        super().__init__()
        self.apply_template = []

    def loglikelihood(self, requests, disable_tqdm=False):
        self.apply_template.append(lm_eval.utils.apply_template)
        return [(0.0, True)] * len(requests)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


def test_prompts_compiled_once_only_while_evaluating_and_the_same_text(data_dir):
    """evaluate_tasks puts render_template in lm-eval's place while it evaluates (each Jinja
    prompt compiled once, not per document), puts lm-eval's back after, and the prompts are
    the text lm-eval's own apply_template makes."""
    original = lm_eval.utils.apply_template
    tasks, _ = load_tasks(["piqa"], data_dir)
    compiled_template.cache_clear()
    recorder = Recorder()
    results = evaluate_tasks(recorder, tasks)
    assert recorder.apply_template == [render_template]
    assert lm_eval.utils.apply_template is original
    samples = results["samples"]["piqa"]
    assert (
        compiled_template.cache_info().misses < len(samples) < compiled_template.cache_info().hits
    )
    task = tasks["tasks"]["piqa"]
    for sample in samples:
        context = sample["arguments"][0][0]
        assert context == original(task.config.doc_to_text, task.eval_docs[sample["doc_id"]])
