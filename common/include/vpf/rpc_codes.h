// The JSON-RPC 2.0 error codes of the project's two JSON-RPC sockets: the agent's client
// socket (docs/protocol.md; its errors also carry a vpf::ErrorCode as data.seed_error) and
// the plugin's control socket (docs/channel.md).  Codes and meanings in one place.
#pragma once

namespace vpf::rpc {

enum Code : int {
  kParseError = -32700,      // malformed JSON; the connection stays
  kInvalidRequest = -32600,  // not a request, or a bad binary frame: sent, then the connection
                             // is closed (the stream cannot be resynchronised)
  kMethodNotFound = -32601,  // unknown method
  kInvalidParams = -32602,   // bad parameters (a bad rule: the matcher's or libpcap's message)
  kInternalError = -32603,   // a request that failed for a reason the server did not foresee
  kRefused = -32000,         // refused by the database; the plugin is not attached; an
                             // instance is busy
  kNotAllowed = -32001,      // the peer may not do this (credentials; a second agent; no hello)
};

}  // namespace vpf::rpc
