#include "eval/word_lists.h"

#include <array>

namespace kvc::eval {
namespace {

constexpr std::array<std::string_view, 150> kAdjectives = {
    "able",     "ancient",  "angry",   "bitter", "black",  "blue",   "bold",    "brave",
    "bright",   "broad",    "broken",  "brown",  "busy",   "calm",   "careful", "cheap",
    "clean",    "clear",    "clever",  "cold",   "common", "cool",   "crisp",   "cruel",
    "curious",  "damp",     "dark",    "deep",   "dense",  "dizzy",  "dry",     "dull",
    "eager",    "early",    "easy",    "empty",  "exact",  "faint",  "fair",    "famous",
    "fast",     "fierce",   "final",   "fine",   "firm",   "flat",   "fond",    "fresh",
    "friendly", "frozen",   "full",    "funny",  "gentle", "giant",  "glad",    "golden",
    "good",     "grand",    "gray",    "great",  "green",  "happy",  "hard",    "heavy",
    "hidden",   "hollow",   "honest",  "huge",   "humble", "hungry", "icy",     "idle",
    "kind",     "large",    "late",    "lazy",   "light",  "little", "lively",  "long",
    "loud",     "lucky",    "magic",   "mellow", "mighty", "modern", "narrow",  "neat",
    "nervous",  "new",      "nice",    "noble",  "odd",    "old",    "orange",  "pale",
    "plain",    "pleasant", "polite",  "poor",   "proud",  "purple", "quick",   "quiet",
    "rapid",    "rare",     "red",     "rich",   "rough",  "round",  "royal",   "rusty",
    "sad",      "safe",     "salty",   "sharp",  "shiny",  "short",  "silent",  "silver",
    "simple",   "slow",     "small",   "smooth", "soft",   "solid",  "sour",    "steady",
    "steep",    "still",    "strange", "strong", "sudden", "sweet",  "swift",   "tall",
    "tender",   "thick",    "thin",    "tidy",   "tiny",   "warm",   "weak",    "wet",
    "white",    "wide",     "wild",    "wise",   "yellow", "young",
};

constexpr std::array<std::string_view, 150> kNouns = {
    "acorn",   "anchor",  "apple",   "arrow",    "badge",   "basket",   "beacon",   "bell",
    "bicycle", "blanket", "boat",    "bottle",   "bridge",  "brush",    "bucket",   "butter",
    "button",  "cabin",   "camera",  "candle",   "canyon",  "carpet",   "castle",   "cherry",
    "chimney", "circle",  "cliff",   "clock",    "cloud",   "coat",     "comet",    "compass",
    "copper",  "cottage", "crayon",  "crown",    "curtain", "daisy",    "desert",   "diamond",
    "dolphin", "door",    "dragon",  "drum",     "eagle",   "engine",   "falcon",   "feather",
    "fence",   "field",   "flag",    "flute",    "forest",  "fountain", "garden",   "garlic",
    "ginger",  "glacier", "glove",   "guava",    "hammer",  "harbor",   "helmet",   "honey",
    "horizon", "island",  "jacket",  "jungle",   "kettle",  "kitten",   "ladder",   "lantern",
    "lemon",   "letter",  "library", "lizard",   "magnet",  "mango",    "maple",    "marble",
    "meadow",  "mirror",  "monkey",  "mountain", "needle",  "nest",     "ocean",    "orchard",
    "otter",   "oyster",  "paddle",  "palace",   "panda",   "parrot",   "pebble",   "pencil",
    "pepper",  "piano",   "pillow",  "planet",   "pocket",  "pond",     "puzzle",   "quilt",
    "rabbit",  "radio",   "raven",   "ribbon",   "river",   "rocket",   "saddle",   "sailor",
    "salmon",  "shadow",  "shell",   "shovel",   "spider",  "spoon",    "squirrel", "statue",
    "stone",   "sugar",   "summit",  "table",    "teapot",  "thunder",  "tiger",    "timber",
    "tomato",  "tower",   "trumpet", "tunnel",   "turtle",  "umbrella", "valley",   "velvet",
    "violin",  "wagon",   "walnut",  "whale",    "window",  "wizard",   "wolf",     "yacht",
    "zebra",   "lobster", "harp",    "orbit",    "saffron", "tulip",
};

}  // namespace

std::span<const std::string_view> adjectives() { return kAdjectives; }
std::span<const std::string_view> nouns() { return kNouns; }

size_t key_word_count() { return kAdjectives.size() * kNouns.size(); }

std::string random_key_word(Rng& rng) {
  const std::string_view adjective = kAdjectives[rng.below(kAdjectives.size())];
  const std::string_view noun = kNouns[rng.below(kNouns.size())];
  std::string key;
  key.reserve(adjective.size() + 1 + noun.size());
  key.append(adjective).append("-").append(noun);
  return key;
}

}  // namespace kvc::eval
