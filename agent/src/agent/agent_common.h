// vpf-agent: what the agent's source files share — the seed's error codes its replies
// carry (docs/protocol.md lists them with their meaning) and its log.
#pragma once

#include <string>

namespace vpf::agent {

// Seed error codes (Win32 numbers, kept for their meaning).
inline constexpr int kErrInvalidParameter = 87;
inline constexpr int kErrNotFound = 1168;
inline constexpr int kErrAlreadyExists = 183;
inline constexpr int kErrNotReady = 21;
inline constexpr int kErrFileNotFound = 2;
inline constexpr int kErrNotSupported = 50;
inline constexpr int kErrPrivilegeNotHeld = 1314;
inline constexpr int kErrConnectionActive = 1230;
inline constexpr int kErrImplementationLimit = 1292;

// One line on standard error: UTC time, "vpf-agent:", the message.
void log(const std::string& msg);

}  // namespace vpf::agent
