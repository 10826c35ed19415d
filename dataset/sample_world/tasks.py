"""Sample-world instructions with program-checkable constraints, shared by the SFT and DPO data.

Two kinds of task:
- story requests ("Write a short story about a dog named Max who lives in a forest.") about a
  made-up hero; the answer must mention the name, the animal, the place (and, when asked, an
  object or an ending feeling, or stay within a number of sentences);
- questions about a world character ("Where does Lily live?") whose answer is in the
  pre-training articles; the answer must give the right fact and no competing one.

Held-out splits: every task has a key (the (name, animal, place) combination of a story request,
the (character, question) of a question); `split_of(seed, key)` puts about 5% of keys in test,
5% in validation and the rest in train, so validation and test ask for combinations that train
never shows.
"""

import functools
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from dataset.sample_world import vocabulary as vocab
from dataset.sample_world.stories import pronouns, write_story
from dataset.sample_world.world import Character, World, build_world, random_character

SPLITS = ("train", "validation", "test")
HELD_OUT_PERCENT = 5  # per held-out split


def split_of(seed: int, key: str) -> str:
    bucket = (
        int.from_bytes(hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest(), "big")
        % 100
    )
    if bucket < HELD_OUT_PERCENT:
        return "test"
    return "validation" if bucket < 2 * HELD_OUT_PERCENT else "train"


# ---------------------------------------------------------------- story requests

STORY_REQUESTS = (
    "Write a short story about {a_animal} named {name} who lives {in_a_place}.",
    "Tell me a story about {name}, {a_animal} who lives {in_a_place}.",
    "Can you write a story about {a_animal} called {name}? {He} lives {in_a_place}.",
    "Write a story for kids. The main character is {name}, {a_animal} who lives {in_a_place}.",
    "Please write a little story about {name} the {animal}, who lives {in_a_place}.",
    "I want a bedtime story about {a_animal} named {name} who lives {in_a_place}.",
)
OBJECT_REQUESTS = (
    " {He} has {a_obj}.",
    " Include {his} {obj} in the story.",
    " {name} loves {his} {obj}.",
)
FEELING_REQUESTS = (
    " At the end, {name} should feel {feeling}.",
    " End the story with {name} feeling {feeling}.",
)
LENGTH_REQUESTS = (
    " Use at most {max_sentences} sentences.",
    " Keep it to {max_sentences} sentences or fewer.",
)


@dataclass(frozen=True)
class StorySpec:
    hero: Character
    friend: Character
    require_object: bool
    feeling: str | None
    max_sentences: int | None
    story_seed: int  # the answer's own random stream, shared by a chosen and a rejected answer

    @property
    def key(self) -> str:
        return f"story|{self.hero.name}|{self.hero.animal.word}|{self.hero.home.word}"


def draw_story_spec(rng: random.Random, world: World, split: str) -> StorySpec:
    names = world.free_boy_names + world.free_girl_names
    while True:  # about 1 draw in 20 lands in a held-out split
        name, animal, home = rng.choice(names), rng.choice(vocab.ANIMALS), rng.choice(vocab.PLACES)
        if split_of(world.seed, f"story|{name}|{animal.word}|{home.word}") == split:
            break
    hero = random_character(rng, name=name, animal=animal, home=home)
    friend_animals = [other for other in vocab.ANIMALS if other != animal]
    friend_names = tuple(other for other in names if other != name)
    friend = random_character(rng, animal=rng.choice(friend_animals), names=friend_names)
    extras = rng.sample(("object", "feeling", "length", "none"), 2)
    return StorySpec(
        hero=hero,
        friend=friend,
        require_object="object" in extras,
        feeling=rng.choice(vocab.ENDING_FEELINGS) if "feeling" in extras else None,
        max_sentences=rng.choice((5, 6)) if "length" in extras else None,
        story_seed=rng.getrandbits(32),
    )


def story_prompt(rng: random.Random, spec: StorySpec) -> str:
    hero = spec.hero
    place = hero.home
    slots = {
        "name": hero.name,
        **pronouns(hero.gender),
        "animal": hero.animal.word,
        "a_animal": vocab.with_article(hero.animal.word),
        "in_a_place": f"{place.preposition} {vocab.with_article(place.word)}",
        "obj": f"{hero.object_adjective} {hero.object}",
        "a_obj": vocab.with_article(f"{hero.object_adjective} {hero.object}"),
        "feeling": spec.feeling,
        "max_sentences": spec.max_sentences,
    }
    text = rng.choice(STORY_REQUESTS)
    if spec.require_object:
        text += rng.choice(OBJECT_REQUESTS)
    if spec.feeling:
        text += rng.choice(FEELING_REQUESTS)
    if spec.max_sentences:
        text += rng.choice(LENGTH_REQUESTS)
    return text.format(**slots)


def story_constraints(spec: StorySpec) -> dict:
    include = [spec.hero.name, spec.hero.animal.word, spec.hero.home.word]
    if spec.require_object:
        include.append(spec.hero.object)
    if spec.feeling:
        include.append(spec.feeling)
    constraints = {"task": "story", "include": include}
    if spec.max_sentences:
        constraints["max_sentences"] = spec.max_sentences
    return constraints


def story_answer(spec: StorySpec, *, long: bool = False) -> str:
    """A short story meeting `spec` (or, with long=True, the same story with every beat)."""
    rng = random.Random(spec.story_seed)
    return write_story(
        rng,
        spec.hero,
        spec.friend,
        feeling=spec.feeling,
        require_object=spec.require_object,
        detail=1.0 if long else rng.uniform(0.15, 0.5),
        max_sentences=10 if long else (spec.max_sentences or 7),
    )


def story_violations(
    rng: random.Random, world: World, spec: StorySpec
) -> list[tuple[str, Callable[[], str]]]:
    """(violation name, answer maker) pairs; each answer breaks `spec` in one checkable way.

    The answers are made lazily: a caller usually needs only one of them.
    """
    hero = spec.hero
    # Same gender, so only the name changes and not the pronouns.
    same_gender = world.free_girl_names if hero.gender == "girl" else world.free_boy_names
    names = [n for n in same_gender if n not in (hero.name, spec.friend.name)]
    animals = [a for a in vocab.ANIMALS if a not in (hero.animal, spec.friend.animal)]
    places = [p for p in vocab.PLACES if p != hero.home]
    name, animal, place = rng.choice(names), rng.choice(animals), rng.choice(places)
    wrong = {
        "wrong_name": replace(spec, hero=replace(hero, name=name)),
        "wrong_animal": replace(spec, hero=replace(hero, animal=animal)),
        "wrong_place": replace(spec, hero=replace(hero, home=place)),
        # a story written for another request: another hero, animal and home
        "other_request": replace(spec, hero=replace(hero, name=name, animal=animal, home=place)),
    }
    if spec.require_object:
        objects = [o for o in vocab.OBJECTS if o != hero.object]
        wrong["wrong_object"] = replace(spec, hero=replace(hero, object=rng.choice(objects)))
    if spec.feeling:
        feelings = [f for f in vocab.ENDING_FEELINGS if f != spec.feeling]
        wrong["wrong_feeling"] = replace(spec, feeling=rng.choice(feelings))
    makers = [
        (name, functools.partial(story_answer, wrong_spec)) for name, wrong_spec in wrong.items()
    ]
    if spec.max_sentences:
        makers.append(("too_long", functools.partial(story_answer, spec, long=True)))
    return makers


# ---------------------------------------------------------------- questions about the world

QUESTIONS = {
    "home": (
        "Where does {name} live?",
        "Where is {name}'s home?",
        "In which place does {name} live?",
    ),
    "animal": ("What kind of animal is {name}?", "What animal is {name}?"),
    "friend": ("Who is {name}'s best friend?", "Who is the best friend of {name}?"),
    "object": ("What is {name}'s favorite thing?", "What does {name} like to play with?"),
    "food": ("What does {name} like to eat?", "What is {name}'s favorite food?"),
    "hobby": ("What does {name} love to do?", "What does {name} like to do for fun?"),
}
ANSWERS = {
    "home": "{name} lives {at_place}.",
    "animal": "{name} is {a_animal}.",
    "friend": "{name}'s best friend is {value}.",
    "object": "{name}'s favorite thing is {a_obj}.",
    "food": "{name} likes to eat {value}.",
    "hobby": "{name} loves {value}.",
}


@dataclass(frozen=True)
class QuestionSpec:
    character: Character
    kind: str  # a QUESTIONS key

    @property
    def key(self) -> str:
        return f"qa|{self.character.name}|{self.kind}"


def _choices(world: World, spec: QuestionSpec) -> tuple[str, list[str]]:
    """The right answer word and every competing word of the same category."""
    hero = spec.character
    options = {
        "home": (hero.home.word, [place.word for place in vocab.PLACES]),
        "animal": (hero.animal.word, [animal.word for animal in vocab.ANIMALS]),
        "friend": (hero.friend, [n for n in world.names if n != hero.name]),
        "object": (hero.object, list(vocab.OBJECTS)),
        "food": (hero.food, list(vocab.FOODS)),
        "hobby": (hero.hobby, list(vocab.HOBBIES)),
    }
    right, everything = options[spec.kind]
    return right, [word for word in everything if word != right]


@functools.lru_cache(maxsize=32)
def _question_specs(seed: int, split: str) -> tuple[QuestionSpec, ...]:
    world = build_world(seed)
    specs = [QuestionSpec(character, kind) for character in world.characters for kind in QUESTIONS]
    in_split = [spec for spec in specs if split_of(seed, spec.key) == split]
    return tuple(in_split or specs)  # a tiny world may leave a held-out split empty


def draw_question_spec(rng: random.Random, world: World, split: str) -> QuestionSpec:
    return rng.choice(_question_specs(world.seed, split))


def question_prompt(rng: random.Random, spec: QuestionSpec) -> str:
    return rng.choice(QUESTIONS[spec.kind]).format(name=spec.character.name)


def question_constraints(world: World, spec: QuestionSpec) -> dict:
    right, others = _choices(world, spec)
    return {"task": "qa", "include": [right], "exclude": others}


def question_answer(world: World, spec: QuestionSpec, value: str | None = None) -> str:
    """The answer sentence, stating `value` (default: the true fact)."""
    hero = spec.character
    value = value or _choices(world, spec)[0]
    slots = {"name": hero.name, "value": value}
    if spec.kind == "home":
        place = vocab.PLACES_BY_WORD[value]
        slots["at_place"] = f"{place.preposition} the {place.word}"
    elif spec.kind == "animal":
        slots["a_animal"] = vocab.with_article(value)
    elif spec.kind == "object":
        slots["a_obj"] = vocab.with_article(f"{hero.object_adjective} {value}")
    return ANSWERS[spec.kind].format(**slots)


def question_violations(
    rng: random.Random, world: World, spec: QuestionSpec
) -> list[tuple[str, Callable[[], str]]]:
    """One (violation name, answer maker): the answer states a wrong fact of the same kind."""
    wrong_value = rng.choice(_choices(world, spec)[1])
    return [("wrong_fact", functools.partial(question_answer, world, spec, wrong_value))]


# ---------------------------------------------------------------- either kind


QUESTION_SHARE = 0.3  # of tasks; the rest are story requests


@dataclass(frozen=True)
class Task:
    prompt: str
    constraints: str  # JSON, for check.satisfies
    answer: str  # meets the constraints
    violations: list[tuple[str, Callable[[], str]]]  # (name, maker of an answer that does not)


def draw_task(
    rng: random.Random, world: World, split: str, question_share: float = QUESTION_SHARE
) -> Task:
    """A random story request (or, a `question_share` of the time, a question) from `split`."""
    if rng.random() < question_share:
        question = draw_question_spec(rng, world, split)
        return Task(
            prompt=question_prompt(rng, question),
            constraints=json.dumps(question_constraints(world, question)),
            answer=question_answer(world, question),
            violations=question_violations(rng, world, question),
        )
    story = draw_story_spec(rng, world, split)
    return Task(
        prompt=story_prompt(rng, story),
        constraints=json.dumps(story_constraints(story)),
        answer=story_answer(story),
        violations=story_violations(rng, world, story),
    )
