// Built-in English word lists for the evaluation tasks. Needle keys combine an adjective and a
// noun ("brave-lantern"), as RULER combines wonderwords' lists; the lists are written out here
// so that samples never depend on an external package's word list version.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "eval/rng.h"

namespace kvc::eval {

std::span<const std::string_view> adjectives();  // ~150 distinct lowercase adjectives
std::span<const std::string_view> nouns();       // ~150 distinct lowercase nouns

// Number of distinct adjective-noun keys.
size_t key_word_count();
// A uniformly drawn "adjective-noun" key.
std::string random_key_word(Rng& rng);

}  // namespace kvc::eval
