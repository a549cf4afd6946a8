#pragma once
// Private to the tokemb CLI: the built-in sample the demo cuts its batch from.

#include <cstdint>
#include <string_view>
#include <vector>

namespace tokemb::cli {

/// The opening paragraphs of Edith Wharton's short story "The Verdict" (1908; in the public
/// domain), the text the book's chapter 2 tokenises.
std::string_view sample_text();

/// sample_text() tokenised byte-level: every UTF-8 byte is one token id in [0, 256).
///
/// This is a stand-in, not GPT-2's BPE (tokemb ships no tokenizer, and real BPE ids cannot be
/// produced without one): the ids are valid for a 50257-token GPT-2 vocabulary and exercise
/// exactly the same lookup, but they are not the ids the book prints (it shows
/// [40, 367, 2885, 1464] for "I HAD always"; here "I HA" is [73, 32, 72, 65]).
std::vector<std::int64_t> sample_token_ids();

}  // namespace tokemb::cli
