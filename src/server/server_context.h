// What the HTTP handlers share (private to src/server/): the engine, the model, the parsing
// limits and the latency histograms.
#pragma once

#include <string>

#include "engine/engine.h"
#include "server/openai_request.h"
#include "server/prometheus.h"

namespace httplib {
struct Response;
}

namespace kvc::server {

struct ServerContext {
  Engine* engine = nullptr;
  const Model* model = nullptr;
  ParseLimits limits;
  ServerHistograms histograms;
  int32_t request_timeout_seconds = 600;
};

// Runs one parsed completion on the engine and writes the JSON response or the event stream.
// Throws ApiError for requests the engine refuses.
void serve_completion(ServerContext& ctx, const CompletionJob& job, httplib::Response& res);

}  // namespace kvc::server
