"""evaluation/tasks.py and the task families: the requests each example becomes (the parity test
checks them against lm-eval; these name the shapes one by one), the groups, few-shot draws."""

import pytest
from evaluation_fixtures import ARC_EVAL, HELLASWAG_EVAL, LAMBADA_TEST, WINOGRANDE_EVAL

from common.errors import UserError
from evaluation.tasks import CORE, all_tasks, build_requests, resolve_tasks

TASKS = all_tasks()


def test_multiple_choice_requests_put_the_choices_after_a_space():
    (example,) = build_requests(TASKS["arc_easy"], ARC_EVAL[:1])
    question = "Question: Which part of a plant takes in water from the soil?\nAnswer:"
    assert example.requests == [(question, " leaves"), (question, " roots"),
                                (question, " flowers"), (question, " seeds")]  # fmt: skip
    assert example.gold == 1 and example.choices == ["leaves", "roots", "flowers", "seeds"]


def test_digit_labels_and_five_options():
    examples = build_requests(TASKS["arc_easy"], ARC_EVAL[2:])
    assert [e.gold for e in examples] == [2, 2] and len(examples[1].requests) == 5


def test_hellaswag_cleans_wikihow_brackets_and_capitalises_ctx_b():
    doc = TASKS["hellaswag"].process_doc(HELLASWAG_EVAL[1])
    assert doc["query"] == (
        "Home and Garden: How to water a plant. Check the soil. Push a finger into the soil "
        "near the stem. If it feels dry"
    )
    # lm-eval strips before it removes brackets: a leading one leaves its space (as lm-eval's)
    assert doc["choices"][1] == " give the plant a slow drink of water."
    assert doc["choices"][3] == " Call a friend for lunch."


def test_winogrande_scores_the_rest_of_the_sentence_after_each_option():
    (example,) = build_requests(TASKS["winogrande"], WINOGRANDE_EVAL[:1])
    rest = " did not need it that day."
    assert example.requests == [("Sarah lent Maria her bike because Sarah", rest),
                                ("Sarah lent Maria her bike because Maria", rest)]  # fmt: skip
    assert example.gold == 0


def test_lambada_is_one_request_for_the_last_word():
    (example,) = build_requests(TASKS["lambada_openai"], LAMBADA_TEST[2:3])
    context, target = example.requests[0]
    assert context.endswith("By summer the garden was full of") and target == " tomatoes"


def test_letter_form_plain_and_chat():
    plain, = build_requests(TASKS["arc_easy_letters"], ARC_EVAL[1:2])  # fmt: skip
    text = ("Question: What happens to water when it freezes?\nA. It becomes a gas.\n"
            "B. It becomes a solid.\nC. It disappears.\nAnswer:")  # fmt: skip
    assert plain.requests == [(text, " A"), (text, " B"), (text, " C")] and plain.gold == 1
    chat, = build_requests(TASKS["arc_easy_letters"], ARC_EVAL[1:2], chat=True)  # fmt: skip
    assert [c for _, c in chat.requests] == ["A", "B", "C"]  # the reply itself: no delimiter
    assert chat.chat_contexts[0] == [{"role": "user", "content": text}]


def test_few_shot_examples_come_first_and_as_turns_when_chatting():
    pool = ARC_EVAL[2:]
    (plain,) = build_requests(TASKS["arc_easy"], ARC_EVAL[:1], pool, num_fewshot=2)
    context = plain.requests[0][0]
    assert context.count("\nAnswer: ") == 2 and context.count("\n\n") == 2
    (chat,) = build_requests(TASKS["arc_easy"], ARC_EVAL[:1], pool, num_fewshot=2, chat=True)
    roles = [m["role"] for m in chat.chat_contexts[0]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    again = build_requests(TASKS["arc_easy"], ARC_EVAL[:1], pool, num_fewshot=2)
    assert again[0].requests == plain.requests  # the fixed seed
    with pytest.raises(UserError, match="only 2"):
        build_requests(TASKS["arc_easy"], ARC_EVAL[:1], pool, num_fewshot=3)


def test_groups_and_names():
    assert [t.name for t in resolve_tasks("core", chat=False)] == list(CORE)
    chat = [t.name for t in resolve_tasks("core,sample_world,piqa", chat=True)]
    assert chat == [*CORE, "arc_easy_letters", "arc_challenge_letters", "sample_world"]
    with pytest.raises(UserError, match="unknown task 'mmlu'"):
        resolve_tasks("mmlu", chat=False)
