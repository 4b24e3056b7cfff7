// The console's number formats (core/format.h).
#include <catch2/catch.hpp>

#include "gum/core/format.h"

using namespace gum;

TEST_CASE("console formats: counts, bytes and durations", "[core]") {
  CHECK(format_count(950) == "950");
  CHECK(format_count(1234) == "1.23k");
  CHECK(format_count(6.74e9) == "6.74G");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
  CHECK(format_bytes(3.0 * (1ull << 30)) == "3.0 GiB");
  CHECK(format_duration(42) == "42s");
  CHECK(format_duration(185) == "3m05s");
  CHECK(format_duration(7800) == "2h10m");
}
