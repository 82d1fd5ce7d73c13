// Errors a client caused, in OpenAI's format:
//   {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}
// Handlers throw ApiError; the server turns it into that body with its HTTP status. Anything
// else a handler throws is a 500 with the same shape, and the server keeps running.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace kvc::server {

struct ApiError : std::runtime_error {
  ApiError(int status_, std::string message, std::string param_ = "",
           std::string code_ = "", std::string type_ = "invalid_request_error")
      : std::runtime_error(message), status(status_), param(std::move(param_)),
        code(std::move(code_)), type(std::move(type_)) {}
  int status;
  std::string param;  // the offending field, "" when none
  std::string code;   // a stable machine-readable code, "" when none
  std::string type;
};

inline nlohmann::json error_body(const std::string& message, const std::string& type,
                                 const std::string& param, const std::string& code) {
  nlohmann::json e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  e["code"] = code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code);
  return nlohmann::json{{"error", e}};
}

inline nlohmann::json error_body(const ApiError& e) {
  return error_body(e.what(), e.type, e.param, e.code);
}

}  // namespace kvc::server
