#pragma once
// Numbers as the console and the memory tables print them.
#include <string>

namespace gum {

// "1.23k", "4.56M", "7.89G"
std::string format_count(double value);
// "512 B", "1.5 KiB", "2.0 GiB"
std::string format_bytes(double bytes);
// "42s", "3m05s", "2h10m"
std::string format_duration(double seconds);

}  // namespace gum
