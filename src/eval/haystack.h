// Haystacks for the evaluation tasks: the units (sentences) that surround needles, and where a
// needle goes for a given depth.
//
// Austen haystacks are contiguous runs of whole sentences from a seeded place in a seeded novel,
// continuing into the next novel (cyclically) when one ends; chapter and title lines are
// skipped and whitespace is collapsed to single spaces (RULER does the same to its essays).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "eval/rng.h"

namespace kvc::eval {

// RULER's "repeat" haystack unit (and the passkey test's noise).
inline constexpr std::string_view kNoiseSentence =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// Whole sentences from `novels`, starting at a random place drawn from `rng`, until their total
// size reaches `min_bytes` (or every novel has been read once). Throws kvc::Error when
// `novels` is empty (the Austen texts were not loaded).
std::vector<std::string> austen_sentences(std::span<const std::string> novels, Rng& rng,
                                          size_t min_bytes);

// Unit boundary for each depth: units[0, b) come before a needle at depth d, where b is the
// boundary (0..units.size()) whose byte offset in the joined haystack (units joined by one
// separator byte) is closest to d * total bytes. Depths in [0, 1]; result has depths.size().
std::vector<size_t> insertion_boundaries(std::span<const std::string> units,
                                         std::span<const double> depths);

// Joins `units` with `separator`, inserting `needles[i]` (each as one more unit) before
// units[boundaries[i]]; boundaries must be non-decreasing.
std::string join_with_needles(std::span<const std::string> units,
                              std::span<const std::string> needles,
                              std::span<const size_t> boundaries, std::string_view separator);

}  // namespace kvc::eval
