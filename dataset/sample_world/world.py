"""The one small world behind every sample corpus: named animal characters with fixed facts.

Its words and templates are data, in world.yaml. `build_world(seed)` is deterministic: the same
seed gives the same characters, homes, best friends and favourite things, so the pre-training
articles, the SFT questions ("Where does Max live?"), the DPO pairs and the multiple-choice test,
made by separate commands, all agree with each other.
"""

import dataclasses
import functools
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

WORDS = yaml.safe_load(Path(__file__).with_name("world.yaml").read_text(encoding="utf-8"))
NUM_CHARACTERS = 40  # small enough that a tiny model can learn every fact


@dataclass(frozen=True)
class Animal:
    word: str
    sound: str  # past tense: "barked"
    call: str  # present tense: "barks"
    move: str  # past tense: "ran"
    body: str  # what covers it: "fur", "feathers", "scales"


@dataclass(frozen=True)
class Place:
    word: str
    preposition: str  # "in" -> "lives in the forest"
    adjectives: tuple[str, ...]
    features: tuple[str, ...]  # things one finds there, with an article


def _fields(text: str) -> list[str]:
    return [field.strip() for field in text.split("|")]


def _place(word: str, fields: str) -> Place:
    preposition, adjectives, features = _fields(fields)
    return Place(word, preposition, tuple(adjectives.split(", ")), tuple(features.split(", ")))


def _words(key: str) -> tuple[str, ...]:
    return tuple(WORDS[key].split())


ANIMALS = tuple(Animal(word, *_fields(fields)) for word, fields in WORDS["animals"].items())
PLACES = tuple(_place(word, fields) for word, fields in WORDS["places"].items())
BOY_NAMES, GIRL_NAMES = _words("boy_names"), _words("girl_names")
OBJECTS, FOODS, HOBBIES = _words("objects"), _words("foods"), _words("hobbies")
TRAITS, COLORS, OBJECT_ADJECTIVES = _words("traits"), _words("colors"), _words("object_adjectives")
ANIMAL_ADJECTIVES, ENDING_FEELINGS = _words("animal_adjectives"), _words("ending_feelings")
PLACES_BY_WORD = {place.word: place for place in PLACES}


def with_article(word: str) -> str:
    """'owl' -> 'an owl'; 'red ball' -> 'a red ball'."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def at(place: Place) -> str:
    """'in the forest', 'on the farm'."""
    return f"{place.preposition} the {place.word}"


def pronouns(gender: str, prefix: str = "") -> dict[str, str]:
    words = (
        ("she", "her", "her", "herself") if gender == "girl" else ("he", "him", "his", "himself")
    )
    slots = dict(zip(("he", "him", "his", "self"), words))
    slots |= {"He": words[0].capitalize(), "His": words[2].capitalize()}
    return {prefix + key: value for key, value in slots.items()}


@dataclass(frozen=True)
class Character:
    """A story hero. World characters have fixed facts; free ones are drawn per story."""

    name: str
    gender: str  # "boy" | "girl", only chooses the pronouns
    animal: Animal
    home: Place
    object: str
    object_adjective: str
    food: str
    hobby: str
    trait: str
    color: str
    friend: str | None = None  # best friend's name (world characters only)

    @property
    def obj(self) -> str:
        return f"{self.object_adjective} {self.object}"

    @property
    def slots(self) -> dict[str, str]:
        """What templates say about the character (world.yaml's {name}, {he}, {a_animal} ...)."""
        return {
            "name": self.name,
            **pronouns(self.gender),
            "animal": self.animal.word,
            "a_animal": with_article(self.animal.word),
            "sound": self.animal.sound,
            "call": self.animal.call,
            "move": self.animal.move,
            "body": self.animal.body,
            "color": self.color,
            "trait": self.trait,
            "hobby": self.hobby,
            "food": self.food,
            "object": self.object,
            "obj": self.obj,
            "a_obj": with_article(self.obj),
            "place": self.home.word,
            "at_place": at(self.home),
        }


@dataclass(frozen=True)
class World:
    seed: int
    characters: tuple[Character, ...]
    free_boy_names: tuple[str, ...]  # names no world character uses, for made-up heroes
    free_girl_names: tuple[str, ...]

    def character(self, name: str) -> Character:
        return next(character for character in self.characters if character.name == name)

    @property
    def names(self) -> list[str]:
        return [character.name for character in self.characters]

    @property
    def free_names(self) -> tuple[str, ...]:
        return self.free_boy_names + self.free_girl_names


def random_character(rng, name=None, animal=None, home=None, names=()) -> Character:
    """A made-up character; any field not given is drawn from `rng`."""
    name = name or rng.choice(names)
    return Character(
        name=name,
        gender="girl" if name in GIRL_NAMES else "boy",
        animal=animal or rng.choice(ANIMALS),
        home=home or rng.choice(PLACES),
        object=rng.choice(OBJECTS),
        object_adjective=rng.choice(OBJECT_ADJECTIVES),
        food=rng.choice(FOODS),
        hobby=rng.choice(HOBBIES),
        trait=rng.choice(TRAITS),
        color=rng.choice(COLORS),
    )


@functools.lru_cache(maxsize=8)
def build_world(seed: int) -> World:
    rng = random.Random(f"sample-world-{seed}")
    boys, girls = list(BOY_NAMES), list(GIRL_NAMES)
    rng.shuffle(boys)
    rng.shuffle(girls)
    half = NUM_CHARACTERS // 2
    names = boys[:half] + girls[:half]
    rng.shuffle(names)
    friend_of = {}  # best friends come in mutual pairs: 0-1, 2-3, ...
    for first, second in zip(names[0::2], names[1::2]):
        friend_of[first], friend_of[second] = second, first
    # Shuffled cycles of the animals and places, so each is used about equally.
    animals = list(ANIMALS) * (NUM_CHARACTERS // len(ANIMALS) + 1)
    places = list(PLACES) * (NUM_CHARACTERS // len(PLACES) + 1)
    rng.shuffle(animals)
    rng.shuffle(places)
    characters = tuple(
        dataclasses.replace(
            random_character(rng, name=name, animal=animals[index], home=places[index]),
            friend=friend_of[name],
        )
        for index, name in enumerate(names)
    )
    return World(seed, characters, tuple(boys[half:]), tuple(girls[half:]))
