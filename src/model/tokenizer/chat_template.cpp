#include "model/tokenizer/chat_template.h"

#include "util/error.h"

namespace kvc {
namespace {

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// Python's str.strip() on ASCII whitespace, as Jinja's `trim` filter used by Llama 3.
std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

std::string format_chatml(std::string_view template_text, std::span<const ChatMessage> messages,
                          bool add_generation_prompt) {
  std::string out;
  const std::string default_system = chatml_default_system_message(template_text);
  if (!default_system.empty() && (messages.empty() || messages[0].role != "system")) {
    out += "<|im_start|>system\n" + default_system + "<|im_end|>\n";
  }
  for (const ChatMessage& message : messages) {
    out += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string format_llama3(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& message : messages) {
    out += "<|start_header_id|>" + message.role + "<|end_header_id|>\n\n";
    out += trim(message.content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

}  // namespace

ChatTemplateKind detect_chat_template(std::string_view template_text) {
  if (contains(template_text, "<|im_start|>")) return ChatTemplateKind::CHATML;
  if (contains(template_text, "<|start_header_id|>") &&
      contains(template_text, "<|end_header_id|>")) {
    return ChatTemplateKind::LLAMA3;
  }
  fail("unsupported chat template (only ChatML and Llama 3 templates are recognised): '{}'",
       template_text.substr(0, 80));
}

std::string chatml_default_system_message(std::string_view template_text) {
  // The Jinja source spells the newline either as a real newline (SmolLM2's GGUF) or as the
  // escape "\n" inside a string literal (Qwen2.5's).
  // Every occurrence is tried: Qwen2.5's template first opens a system turn in its tools branch
  // ("'<|im_start|>system\n' }}", no literal) and holds the literal default only further on.
  for (std::string_view head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    for (size_t start = template_text.find(head); start != std::string_view::npos;
         start = template_text.find(head, start + head.size())) {
      const size_t body = start + head.size();
      const size_t end = template_text.find("<|im_end|>", body);
      if (end == std::string_view::npos) break;
      const std::string_view message = template_text.substr(body, end - body);
      // A literal message has no Jinja in it; "' + message['content'] + '" is not a default.
      if (message.empty() || message.find_first_of("'\"{}") != std::string_view::npos) continue;
      return std::string(message);
    }
  }
  return {};
}

std::string apply_chat_template(std::string_view template_text,
                                std::span<const ChatMessage> messages,
                                bool add_generation_prompt) {
  switch (detect_chat_template(template_text)) {
    case ChatTemplateKind::CHATML:
      return format_chatml(template_text, messages, add_generation_prompt);
    case ChatTemplateKind::LLAMA3:
      return format_llama3(messages, add_generation_prompt);
  }
  fail("unsupported chat template");
}

}  // namespace kvc
