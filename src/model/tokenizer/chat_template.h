// Chat templates: a conversation -> the prompt text the model was trained on.
//
// GGUF files carry a Jinja template (`tokenizer.chat_template`). Like llama.cpp's
// llm_chat_apply_template we do not run Jinja: we recognise the template family by marker
// strings and format it in C++.
//   - ChatML (contains "<|im_start|>"): "<|im_start|>{role}\n{content}<|im_end|>\n" per message,
//     then "<|im_start|>assistant\n" when add_generation_prompt. SmolLM2 and Qwen2.5 templates
//     also insert a default system message when the first message is not a system one; when the
//     template holds such a literal "<|im_start|>system\n...<|im_end|>" we do the same.
//   - Llama 3 (contains "<|start_header_id|>" and "<|end_header_id|>"):
//     "<|start_header_id|>{role}<|end_header_id|>\n\n{trimmed content}<|eot_id|>" per message,
//     then "<|start_header_id|>assistant<|end_header_id|>\n\n". No "<|begin_of_text|>": the
//     tokenizer adds BOS (add_bos is true for Llama 3), as with llama.cpp.
// Anything else throws kvc::Error("unsupported chat template ...").
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace kvc {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatTemplateKind { CHATML, LLAMA3 };

// The family of `template_text`; throws kvc::Error when it is not one we format.
ChatTemplateKind detect_chat_template(std::string_view template_text);

// The literal default system message of a ChatML template ("" when it has none).
std::string chatml_default_system_message(std::string_view template_text);

std::string apply_chat_template(std::string_view template_text,
                                std::span<const ChatMessage> messages,
                                bool add_generation_prompt);

}  // namespace kvc
