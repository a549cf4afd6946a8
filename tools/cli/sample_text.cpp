// The demo's built-in sample text (public domain) and its byte-level token ids.
#include "tools/cli/sample_text.hpp"

namespace tokemb::cli {

namespace {

// Edith Wharton, "The Verdict" (Scribner's Magazine, 1908), first two paragraphs. Public domain.
constexpr std::string_view kVerdict =
    "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough--so it "
    "was no great surprise to me to hear that, in the height of his glory, he had dropped his "
    "painting, married a rich widow, and established himself in a villa on the Riviera. "
    "(Though I rather thought it would have been Rome or Florence.)\n\n"
    "\"The height of his glory\"--that was what the women called it. I can hear Mrs. Gideon "
    "Thwing--his last Chicago sitter--deploring his unaccountable abdication. \"Of course it's "
    "going to send the value of my picture 'way up; but I don't think of that, Mr. Rickham--the "
    "loss to Arrt is all I think of.\" The word, on Mrs. Thwing's lips, multiplied its _rs_ as "
    "though they were reflected in an endless vista of mirrors.\n";

}  // namespace

std::string_view sample_text() { return kVerdict; }

std::vector<std::int64_t> sample_token_ids() {
  std::vector<std::int64_t> ids;
  ids.reserve(kVerdict.size());
  for (char c : kVerdict) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

}  // namespace tokemb::cli
