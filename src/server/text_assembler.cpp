#include "server/text_assembler.h"

#include <algorithm>

namespace kvc::server {

TextAssembler::TextAssembler(const Tokenizer& tokenizer, std::vector<std::string> stops)
    : tokenizer_(tokenizer), stops_(std::move(stops)) {}

std::string TextAssembler::add(int32_t token) {
  if (stopped_) return {};
  if (!tokenizer_.is_control(token)) bytes_ += tokenizer_.token_to_piece(token);
  // A stop string can only be new where the bytes added now are.
  size_t longest = 0;
  for (const std::string& s : stops_) longest = std::max(longest, s.size());
  const size_t from = sent_ > longest ? sent_ - longest : 0;
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, bytes_.find(s, from));
  if (cut != std::string::npos) {
    bytes_.resize(cut);
    stopped_ = true;
    return flush();
  }
  const size_t end = safe_end();
  std::string out = bytes_.substr(sent_, end - sent_);
  sent_ = end;
  text_ += out;
  return out;
}

std::string TextAssembler::flush() {
  std::string out = bytes_.substr(std::min(sent_, bytes_.size()));
  sent_ = bytes_.size();
  text_ += out;
  return out;
}

size_t TextAssembler::safe_end() const {
  size_t end = bytes_.size();
  // Hold back a tail that is the start of some stop string.
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, bytes_.size()); k > 0; --k) {
      if (bytes_.compare(bytes_.size() - k, k, s, 0, k) == 0) {
        end = std::min(end, bytes_.size() - k);
        break;
      }
    }
  }
  // Never split a UTF-8 character: back up over an incomplete trailing sequence.
  size_t lead = end;
  int32_t continuation = 0;
  while (lead > sent_ && continuation < 3 &&
         (static_cast<unsigned char>(bytes_[lead - 1]) & 0xC0) == 0x80) {
    --lead;
    ++continuation;
  }
  if (lead > sent_) {
    const auto c = static_cast<unsigned char>(bytes_[lead - 1]);
    const int32_t length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (length > 1 && continuation + 1 < length) end = lead - 1;
  }
  return std::max(end, sent_);
}

}  // namespace kvc::server
