"""A multiple-choice test about the sample world: questions whose right answer a program knows.

Each of the 40 characters is asked the six fact questions ("Where does Max live?"; the choices
are the answer sentences with another place, animal, friend, thing, food or hobby) and gets one
story item (a story in which the hero loses a named thing; four endings in which it is found,
one of them the thing that was lost): 280 items, chance 1/4. The "train" split asks the same
facts with other wordings and choices, for few-shot examples.

>>> rows = multiple_choice_rows(seed=0, split="test")
>>> len(rows), sorted(rows[0])
(280, ['answer', 'character', 'choices', 'kind', 'question'])
"""

import random

from dataset.sample_world.corpus import story_slots
from dataset.sample_world.tasks import (
    QUESTIONS,
    QuestionSpec,
    question_answer,
    question_constraints,
    question_prompt,
)
from dataset.sample_world.world import OBJECTS, PLACES, WORDS, build_world

NUM_CHOICES = 4
SPLITS = ("train", "test")
LOST = WORDS["plots"][0][0]["core"]  # the lost-toy plot's first beat: "{time}, {name} lost ..."
FOUND = "At last, {name} found the {obj} near {feature}."


def multiple_choice_rows(seed: int, split: str) -> list[dict]:
    """The items of `split` ("test": the evaluation; "train": few-shot examples), in a fixed
    order; columns question, choices (4 strings), answer (index of the right one), kind,
    character."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    world = build_world(seed)
    rng = random.Random(f"sample-multiple-choice-{seed}-{split}")

    def choices(right: str, wrong: list[str]) -> dict:
        drawn = [right, *rng.sample(wrong, NUM_CHOICES - 1)]
        rng.shuffle(drawn)
        return {"choices": drawn, "answer": drawn.index(right)}

    rows = []
    for hero in world.characters:
        for kind in QUESTIONS:
            spec = QuestionSpec(hero, kind)
            wrong = [
                question_answer(world, spec, value)
                for value in question_constraints(world, spec)["exclude"]
            ]
            item = choices(question_answer(world, spec), wrong)
            rows.append(
                {
                    "question": question_prompt(rng, spec),
                    **item,
                    "kind": kind,
                    "character": hero.name,
                }
            )
    for hero in world.characters:
        place2 = rng.choice([place for place in PLACES if place != hero.home])
        slots = story_slots(rng, hero, world.character(hero.friend), place2)
        question = f"{rng.choice(WORDS['openings'])} {rng.choice(LOST)}".format(**slots)
        endings = {
            thing: FOUND.format(**slots | {"obj": f"{hero.object_adjective} {thing}"})
            for thing in OBJECTS
        }
        item = choices(endings.pop(hero.object), list(endings.values()))
        rows.append({"question": question, **item, "kind": "story", "character": hero.name})
    return rows
