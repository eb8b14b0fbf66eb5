// vpf-agent: the wiring of its four parts (see agent.h).
#include "agent.h"

#include <ctime>
#include <iostream>

#include "agent_common.h"
#include "client_api.h"
#include "event_router.h"
#include "plugin_link.h"
#include "policy_store.h"

namespace vpf::agent {

void log(const std::string& msg) {
  char ts[32];
  const std::time_t t = std::time(nullptr);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  std::cerr << ts << " vpf-agent: " << msg << std::endl;
}

Agent::Agent(boost::asio::io_context& io, Options opts)
    : io_(io),
      opts_(std::move(opts)),
      store_(std::make_unique<PolicyStore>(*this)),
      link_(std::make_unique<PluginLink>(*this)),
      events_(std::make_unique<EventRouter>(*this)),
      api_(std::make_unique<ClientApi>(*this)) {}

Agent::~Agent() {
  link_->detach_plugin("");  // while the sessions and the router are still there
}

void Agent::start() {
  store_->start();
  api_->listen();
  link_->start();
  log("started: ovsdb " + opts_.ovsdb + ", clients on " + opts_.socket);
}

void Agent::handle(Session& s, const std::string& method, const nlohmann::json& params, Reply reply) {
  api_->handle(s, method, params, std::move(reply));
}

void Agent::on_verdict(Session& s, const protocol::VerdictFrame& v, std::span<const uint8_t> data) {
  events_->on_verdict(s, v, data);
}

void Agent::on_session_closed(Session& s) { api_->on_session_closed(s); }

}  // namespace vpf::agent
