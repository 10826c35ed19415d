"""WikiText-like encyclopedic articles about the sample world's characters, places and animals.

The layout is that of WikiText after our cleaning: a `= Title =` line, paragraphs, and
`= = Section = =` lines, one per line. Each article states its facts in the very words the SFT
answers use ("Max lives in the forest."), so a model that read the articles can answer the
questions. Every call draws fresh phrasings, so the same facts appear in many wordings.
"""

import random

from dataset.sample_world import vocabulary as vocab
from dataset.sample_world.stories import pronouns
from dataset.sample_world.world import Character, World


def at_place(place: vocab.Place) -> str:
    return f"{place.preposition} the {place.word}"


def _fact_slots(world: World, hero: Character) -> dict[str, str]:
    friend = world.character(hero.friend)
    return {
        "name": hero.name,
        **pronouns(hero.gender),
        "animal": hero.animal.word,
        "Animal": hero.animal.word.capitalize(),
        "a_animal": vocab.with_article(hero.animal.word),
        "a_color_animal": vocab.with_article(f"{hero.color} {hero.animal.word}"),
        "color": hero.color,
        "body": hero.animal.body,
        "call": hero.animal.call,
        "at_place": at_place(hero.home),
        "place": hero.home.word,
        "feature": hero.home.features[0],
        "friend": friend.name,
        "a_fanimal": vocab.with_article(friend.animal.word),
        "fat_place": at_place(friend.home),
        "a_obj": vocab.with_article(f"{hero.object_adjective} {hero.object}"),
        "obj": f"{hero.object_adjective} {hero.object}",
        "food": hero.food,
        "hobby": hero.hobby,
        "trait": hero.trait,
    }


CHARACTER_LEADS = (
    "{name} is {a_color_animal} who lives {at_place}. {He} is known for being {trait}.",
    "{name} is a {trait} {animal}. {name} lives {at_place}, and {he} has {color} {body}.",
    "{name} is {a_animal} from the {place}. {name} lives {at_place} and loves {hobby}.",
)
CHARACTER_SECTIONS = {
    "Home": (
        "{name} lives {at_place}, near {feature}. {He} has lived there all {his} life.",
        "{name} lives {at_place}. {His} home is close to {feature}.",
        "The home of {name} is {at_place}. Every day, {name} walks past {feature}.",
    ),
    "Friends": (
        "{name}'s best friend is {friend}, {a_fanimal} who lives {fat_place}. "
        "The two friends often play together.",
        "{name}'s best friend is {friend}. {friend} is {a_fanimal}.",
        "Everyone knows that {name}'s best friend is {friend}. They visit each other often.",
    ),
    "Favorite things": (
        "{name}'s favorite thing is {a_obj}. {name} likes to eat {food}.",
        "{name} likes to eat {food}, and {his} favorite thing is {a_obj}.",
        "{name}'s favorite food is {food}. {name} loves {hobby}, "
        "and {he} always keeps {a_obj} nearby.",
    ),
    "Personality": (
        "{name} is {trait}. In {his} free time, {name} loves {hobby}.",
        "Friends describe {name} as {trait}. {name} loves {hobby}.",
        "{name} is a {trait} {animal}. When {he} is happy, {he} {call} loudly.",
    ),
}
STORY_SUMMARIES = (
    "In one story, {name} loses {his} {obj} and finds it again.",
    "In one story, {name} helps {friend} when {friend} is stuck in the mud.",
    "In one story, {name} and {friend} have a race and finish it together.",
    "In one story, {name} shares a bowl of {food} with {friend}.",
    "In one story, {name} practices {hobby} every day until {he} is good at it.",
)


def character_article(rng: random.Random, world: World, hero: Character) -> str:
    slots = _fact_slots(world, hero)
    lines = [f"= {hero.name} the {hero.animal.word.capitalize()} =", rng.choice(CHARACTER_LEADS)]
    sections = list(CHARACTER_SECTIONS)
    rng.shuffle(sections)
    for section in sections[: rng.randint(2, len(sections))]:
        lines += [f"= = {section} = =", rng.choice(CHARACTER_SECTIONS[section])]
    if rng.random() < 0.5:
        lines += ["= = In stories = =", rng.choice(STORY_SUMMARIES)]
    return "\n".join(line.format(**slots) for line in lines)


def place_article(rng: random.Random, world: World, place: vocab.Place) -> str:
    residents = [character for character in world.characters if character.home == place]
    features = list(place.features)
    rng.shuffle(features)
    lines = [
        f"= The {place.word.capitalize()} =",
        f"The {place.word} is {vocab.with_article(rng.choice(place.adjectives))} place. "
        f"Visitors to the {place.word} can see {features[0]}, {features[1]} and {features[2]}.",
    ]
    if residents:
        lines.append("= = Residents = =")
        described = [
            f"{character.name} is {vocab.with_article(character.animal.word)} who lives "
            f"{at_place(place)}."
            for character in residents
        ]
        rng.shuffle(described)
        lines.append(" ".join(described))
    lines += ["= = Features = =", f"The best known sight {at_place(place)} is {features[3]}."]
    return "\n".join(lines)


def animal_article(rng: random.Random, world: World, animal: vocab.Animal) -> str:
    known = [character for character in world.characters if character.animal == animal]
    lines = [
        f"= {animal.word.capitalize()} =",
        f"The {animal.word} is an animal with {animal.body}. "
        f"When it is happy, {vocab.with_article(animal.word)} {animal.call}.",
    ]
    if known:
        rng.shuffle(known)
        lines.append("= = Known characters = =")
        lines.append(" ".join(f"{c.name} is {vocab.with_article(animal.word)}." for c in known))
    return "\n".join(lines)


def write_article(rng: random.Random, world: World) -> str:
    """A random article: mostly about a character, sometimes about a place or an animal."""
    roll = rng.random()
    if roll < 0.7:
        return character_article(rng, world, rng.choice(world.characters))
    if roll < 0.85:
        return place_article(rng, world, rng.choice(vocab.PLACES))
    return animal_article(rng, world, rng.choice(vocab.ANIMALS))
