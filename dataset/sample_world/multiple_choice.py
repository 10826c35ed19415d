"""A multiple-choice test about the sample world: questions whose right answer a program knows.

Two kinds of item, each with one right choice and three wrong ones of the same category:
- a fact question about a world character ("Where does Max live?"), answered with the sentence
  the SFT answers and the pre-training articles use ("Max lives in the forest."), the wrong
  choices stating another place, animal, friend, favourite thing, food or hobby;
- a story item ("what happened"): a story opening in which the hero loses a named thing, and
  four endings in which the hero finds it, only one of them the thing that was lost.

>>> rows = multiple_choice_rows(seed=0, split="test")
>>> len(rows), sorted(rows[0])
(280, ['answer', 'character', 'choices', 'kind', 'question'])

Every world character is asked every fact question (40 x 6) and gets one story item (40), so
the test covers the whole world; the "train" split draws the same facts with other wordings and
wrong choices, for few-shot examples. A model that only guesses scores 1/4.
"""

import random

from dataset.sample_world import plots
from dataset.sample_world import vocabulary as vocab
from dataset.sample_world.stories import story_slots
from dataset.sample_world.tasks import (
    QUESTIONS,
    QuestionSpec,
    question_answer,
    question_constraints,
    question_prompt,
)
from dataset.sample_world.world import Character, World, build_world

NUM_CHOICES = 4
SPLITS = ("train", "test")
LOST_BEAT = plots.PLOTS[0][0]  # the lost-toy plot: "{time}, {name} lost {his} {obj}."
FOUND_ENDING = "At last, {name} found the {obj} near {feature}."


def multiple_choice_rows(seed: int, split: str) -> list[dict]:
    """The items of `split` ("test": the evaluation; "train": few-shot examples), in a fixed
    order; columns question, choices (4 strings), answer (index of the right one), kind,
    character."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    world = build_world(seed)
    rng = random.Random(f"sample-multiple-choice-{seed}-{split}")
    rows = []
    for character in world.characters:
        for kind in QUESTIONS:
            rows.append(_fact_item(rng, world, QuestionSpec(character, kind)))
    rows += [_story_item(rng, world, character) for character in world.characters]
    return rows


def _shuffled(rng: random.Random, right: str, wrong: list[str]) -> tuple[list[str], int]:
    choices = [right, *rng.sample(wrong, NUM_CHOICES - 1)]
    rng.shuffle(choices)
    return choices, choices.index(right)


def _fact_item(rng: random.Random, world: World, spec: QuestionSpec) -> dict:
    constraints = question_constraints(world, spec)  # include: [right word], exclude: the rest
    wrong = [question_answer(world, spec, value) for value in constraints["exclude"]]
    choices, answer = _shuffled(rng, question_answer(world, spec), wrong)
    return {
        "question": question_prompt(rng, spec),
        "choices": choices,
        "answer": answer,
        "kind": spec.kind,
        "character": spec.character.name,
    }


def _story_item(rng: random.Random, world: World, hero: Character) -> dict:
    friend = world.character(hero.friend)
    place2 = rng.choice([place for place in vocab.PLACES if place != hero.home])
    slots = story_slots(rng, hero, friend, place2)
    opening = rng.choice(plots.OPENINGS).format(**slots)
    lost = rng.choice(LOST_BEAT.alternatives).format(**slots)

    def ending(thing: str) -> str:
        obj = f"{hero.object_adjective} {thing}"
        return FOUND_ENDING.format(name=hero.name, obj=obj, feature=slots["feature"])

    wrong = [ending(thing) for thing in vocab.OBJECTS if thing != hero.object]
    choices, answer = _shuffled(rng, ending(hero.object), wrong)
    return {
        "question": f"{opening} {lost}",
        "choices": choices,
        "answer": answer,
        "kind": "story",
        "character": hero.name,
    }
