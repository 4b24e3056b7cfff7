#pragma once
// Running a shell command line from a test, with its exit status and output.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

namespace gum_test {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;      // the signal that ended it, 0 when it exited
  std::string output;  // stdout and stderr together
};

// Runs `command_line` with /bin/sh, capturing stdout and stderr.
inline CommandResult run_command(const std::string& command_line) {
  CommandResult result;
  std::FILE* pipe = popen((command_line + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, got);
  const int status = pclose(pipe);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  // /bin/sh reports a child killed by signal N as exit status 128 + N.
  if (result.exit_code > 128 && result.exit_code < 128 + 64) {
    result.signal = result.exit_code - 128;
    result.exit_code = -1;
  }
  return result;
}

}  // namespace gum_test
