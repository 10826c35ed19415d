"""TinyStories-like stories: a hero, a friend, a place and one small plot, in simple English.

`write_story` is used for the pre-training stories and, with its options, for the SFT answers and
the DPO pairs, so an instruction-following answer reads exactly like the stories the model saw in
pre-training.
"""

import random

from dataset.sample_world import plots
from dataset.sample_world import vocabulary as vocab
from dataset.sample_world.check import count_sentences
from dataset.sample_world.world import Character

MAX_SENTENCES = 10


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def pronouns(gender: str, prefix: str = "") -> dict[str, str]:
    he, him, his, self = (
        ("she", "her", "her", "herself") if gender == "girl" else ("he", "him", "his", "himself")
    )
    return {
        f"{prefix}he": he,
        f"{prefix}He": he.capitalize(),
        f"{prefix}him": him,
        f"{prefix}his": his,
        f"{prefix}His": his.capitalize(),
        f"{prefix}self": self,
    }


def story_slots(
    rng: random.Random, hero: Character, friend: Character, place2: vocab.Place
) -> dict[str, str]:
    place = hero.home
    feature, feature2 = rng.sample(place.features, 2)
    obj = f"{hero.object_adjective} {hero.object}"
    at_a_place = f"{place.preposition} {vocab.with_article(rng.choice(place.adjectives))} "
    return {
        "name": hero.name,
        **pronouns(hero.gender),
        "friend": friend.name,
        **pronouns(friend.gender, prefix="f"),
        "animal": hero.animal.word,
        "a_animal": vocab.with_article(hero.animal.word),
        "adj_animal": vocab.with_article(
            f"{rng.choice(vocab.ANIMAL_ADJECTIVES)} {hero.animal.word}"
        ),
        "fanimal": friend.animal.word,
        "a_fanimal": vocab.with_article(friend.animal.word),
        "sound": hero.animal.sound,
        "move": hero.animal.move,
        "fmove": friend.animal.move,
        "body": hero.animal.body,
        "color": hero.color,
        "trait": hero.trait,
        "hobby": hero.hobby,
        "food": hero.food,
        "object": hero.object,
        "obj": obj,
        "a_obj": vocab.with_article(obj),
        "place": place.word,
        "at_place": f"{place.preposition} the {place.word}",
        "At_a_place": _capitalize(at_a_place + place.word),
        "feature": feature,
        "feature2": feature2,
        "place2": place2.word,
        "feature3": rng.choice(place2.features),
        "time": rng.choice(vocab.TIMES),
    }


def write_story(
    rng: random.Random,
    hero: Character,
    friend: Character,
    *,
    feeling: str | None = None,
    require_object: bool = False,
    detail: float = 0.6,
    max_sentences: int = MAX_SENTENCES,
) -> str:
    """One story about `hero` (and `friend`); every random choice comes from `rng`.

    feeling: end with a sentence saying the hero felt this (an ENDING_FEELINGS word).
    require_object: introduce the hero's object right after the opening.
    detail: the chance of each optional beat; 0 gives the shortest form of the plot.
    max_sentences: optional beats are dropped from the end until the story fits.
    """
    place2 = rng.choice([place for place in vocab.PLACES if place != hero.home])
    slots = story_slots(rng, hero, friend, place2)
    if feeling is not None:
        slots["feeling"] = feeling
    parts: list[tuple[str, bool]] = [(rng.choice(plots.OPENINGS), True)]  # (template, core)
    if require_object:
        parts.append((rng.choice(plots.OBJECT_INTROS), True))
    for extras in plots.INTRO_EXTRAS:
        if rng.random() < detail * 0.3:
            parts.append((rng.choice(extras), False))
    for beat in rng.choice(plots.PLOTS):
        if beat.core or rng.random() < detail:
            parts.append((rng.choice(beat.alternatives), beat.core))
    if feeling is not None:
        parts.append((rng.choice(plots.FEELING_ENDINGS), True))
    elif rng.random() < detail * 0.3:
        slots["feeling"] = rng.choice(vocab.ENDING_FEELINGS)
        parts.append((rng.choice(plots.FEELING_ENDINGS), False))
    if rng.random() < detail * 0.3:
        parts.append((rng.choice(plots.CLOSINGS), False))

    sentences = [template.format(**slots) for template, _ in parts]
    # Drop optional beats from the end until the story is short enough.
    while count_sentences(" ".join(sentences)) > max_sentences:
        optional = [index for index, (_, is_core) in enumerate(parts) if not is_core]
        if not optional:
            break
        del parts[optional[-1]], sentences[optional[-1]]
    return " ".join(sentences)
