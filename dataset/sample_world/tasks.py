"""Sample-world instructions with program-checkable constraints: the SFT rows and the DPO pairs.

Story requests ("Write a short story about a dog named Max who lives in a forest.", maybe with
an object, an ending feeling or a sentence limit) about made-up heroes, and questions about the
world's characters ("Where does Lily live?") answered in the articles' words. Every task has a
key (name, animal, place; or character, question); `split_of` puts ~5% of keys in test and 5% in
validation, so held-out splits ask what train never shows. A DPO pair's rejected answer is the
same story with one checkable fault: a wrong name or home, another request's story, too long.
"""

import functools
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, replace

from dataset.sample_world import world as vocab
from dataset.sample_world.check import satisfies
from dataset.sample_world.corpus import write_story
from dataset.sample_world.world import Character, World, at, build_world, with_article

HELD_OUT_PERCENT = 5  # per held-out split
QUESTION_SHARE = 0.3  # of SFT tasks; the rest are story requests
QUESTIONS: dict[str, list[str]] = vocab.WORDS["questions"]  # kind -> phrasings ("home": ...)
ANSWERS: dict[str, str] = vocab.WORDS["answers"]


def split_of(seed: int, key: str) -> str:
    digest = hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=8).digest()
    bucket = int.from_bytes(digest, "big") % 100
    if bucket < HELD_OUT_PERCENT:
        return "test"
    return "validation" if bucket < 2 * HELD_OUT_PERCENT else "train"


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

    @property
    def prompt_slots(self) -> dict:
        home = self.hero.home
        return self.hero.slots | {
            "in_a_place": f"{home.preposition} {with_article(home.word)}",
            "feeling": self.feeling,
            "max_sentences": self.max_sentences,
        }


def draw_story_spec(rng: random.Random, world: World, split: str) -> StorySpec:
    while True:  # about 1 draw in 20 lands in a held-out split
        name, animal = rng.choice(world.free_names), rng.choice(vocab.ANIMALS)
        home = rng.choice(vocab.PLACES)
        if split_of(world.seed, f"story|{name}|{animal.word}|{home.word}") == split:
            break
    hero = vocab.random_character(rng, name=name, animal=animal, home=home)
    others = tuple(n for n in world.free_names if n != name)
    friend_animal = rng.choice([a for a in vocab.ANIMALS if a != animal])
    friend = vocab.random_character(rng, animal=friend_animal, names=others)
    extras = rng.sample(("object", "feeling", "length", "none"), 2)
    feeling = rng.choice(vocab.ENDING_FEELINGS) if "feeling" in extras else None
    max_sentences = rng.choice((5, 6)) if "length" in extras else None
    return StorySpec(hero, friend, "object" in extras, feeling, max_sentences, rng.getrandbits(32))


def story_prompt(rng: random.Random, spec: StorySpec) -> str:
    text = rng.choice(vocab.WORDS["story_requests"])
    asked = (spec.require_object, spec.feeling, spec.max_sentences)
    for wanted, requests in zip(asked, ("object_requests", "feeling_requests", "length_requests")):
        if wanted:
            text += " " + rng.choice(vocab.WORDS[requests])
    return text.format(**spec.prompt_slots)


def story_constraints(spec: StorySpec) -> dict:
    include = [spec.hero.name, spec.hero.animal.word, spec.hero.home.word]
    include += [spec.hero.object] if spec.require_object else []
    include += [spec.feeling] if spec.feeling else []
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


def rejected_answers(rng: random.Random, world: World, spec: StorySpec) -> dict[str, str]:
    """{violation: the story of `spec` told with that one fault}."""
    hero = spec.hero
    same_gender = world.free_girl_names if hero.gender == "girl" else world.free_boy_names
    name = rng.choice([n for n in same_gender if n not in (hero.name, spec.friend.name)])
    animal = rng.choice([a for a in vocab.ANIMALS if a not in (hero.animal, spec.friend.animal)])
    place = rng.choice([p for p in vocab.PLACES if p != hero.home])
    wrong_heroes = {
        "wrong_name": replace(hero, name=name),
        "wrong_place": replace(hero, home=place),
        "other_request": replace(hero, name=name, animal=animal, home=place),
    }
    answers = {
        kind: story_answer(replace(spec, hero=wrong)) for kind, wrong in wrong_heroes.items()
    }
    if spec.max_sentences:
        answers["too_long"] = story_answer(spec, long=True)
    return answers


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
    right, everything = {
        "home": (hero.home.word, [place.word for place in vocab.PLACES]),
        "animal": (hero.animal.word, [animal.word for animal in vocab.ANIMALS]),
        "friend": (hero.friend, world.names),
        "object": (hero.object, vocab.OBJECTS),
        "food": (hero.food, vocab.FOODS),
        "hobby": (hero.hobby, vocab.HOBBIES),
    }[spec.kind]
    return right, [word for word in everything if word not in (right, hero.name)]


def question_prompt(rng: random.Random, spec: QuestionSpec) -> str:
    return rng.choice(QUESTIONS[spec.kind]).format(name=spec.character.name)


def question_constraints(world: World, spec: QuestionSpec) -> dict:
    right, others = _choices(world, spec)
    return {"task": "qa", "include": [right], "exclude": others}


def question_answer(world: World, spec: QuestionSpec, value: str | None = None) -> str:
    """The answer sentence, stating `value` (default: the true fact)."""
    hero = spec.character
    value = value or _choices(world, spec)[0]
    place = vocab.PLACES_BY_WORD.get(value)
    return ANSWERS[spec.kind].format(
        name=hero.name,
        value=value,
        at_place=place and at(place),
        a_animal=with_article(value),
        a_obj=with_article(f"{hero.object_adjective} {value}"),
    )


@functools.lru_cache(maxsize=32)
def _question_specs(seed: int, split: str) -> tuple[QuestionSpec, ...]:
    world = build_world(seed)
    specs = [QuestionSpec(character, kind) for character in world.characters for kind in QUESTIONS]
    return tuple([s for s in specs if split_of(seed, s.key) == split] or specs)


def _message(role: str, content: str) -> list[dict]:
    return [{"role": role, "content": content}]


def sft_rows(seed: int, split: str, count: int) -> list[dict]:
    """`count` conversations (messages, constraints) whose tasks belong to `split`."""
    world = build_world(seed)
    rng = random.Random(f"sample-sft-{seed}-{split}")
    rows = []
    while len(rows) < count:
        if rng.random() < QUESTION_SHARE:
            question = rng.choice(_question_specs(seed, split))
            prompt, answer = question_prompt(rng, question), question_answer(world, question)
            constraints = question_constraints(world, question)
        else:
            story = draw_story_spec(rng, world, split)
            prompt, answer = story_prompt(rng, story), story_answer(story)
            constraints = story_constraints(story)
        constraints = json.dumps(constraints)
        if satisfies(constraints, answer):  # never teach an answer that fails
            messages = _message("user", prompt) + _message("assistant", answer)
            rows.append({"messages": messages, "constraints": constraints})
    return rows


def dpo_rows(seed: int, split: str, count: int) -> tuple[list[dict], Counter]:
    """`count` pairs for `split`, and how many pairs use each kind of violation."""
    world = build_world(seed)
    rng = random.Random(f"sample-dpo-{seed}-{split}")
    rows, kinds = [], Counter()
    while len(rows) < count:
        story = draw_story_spec(rng, world, split)
        prompt, chosen = story_prompt(rng, story), story_answer(story)
        constraints = json.dumps(story_constraints(story))
        rejected = list(rejected_answers(rng, world, story).items())
        rng.shuffle(rejected)
        # the first fault the checker really rejects (a random friend could, say, carry the
        # requested name and so save a "wrong name" answer)
        broken = [(kind, text) for kind, text in rejected if not satisfies(constraints, text)]
        if not broken or not satisfies(constraints, chosen):
            continue
        kind, text = broken[0]
        kinds[kind] += 1
        rows.append(
            {
                "prompt": _message("user", prompt),
                "chosen": _message("assistant", chosen),
                "rejected": _message("assistant", text),
                "constraints": constraints,
            }
        )
    return rows, kinds
