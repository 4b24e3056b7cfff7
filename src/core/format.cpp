#include "gum/core/format.h"

#include <cmath>
#include <cstdio>

namespace gum {

std::string format_count(double value) {
  const char* suffix[] = {"", "k", "M", "G", "T", "P", "E"};
  int i = 0;
  while (std::fabs(value) >= 1000.0 && i < 6) {
    value /= 1000.0;
    ++i;
  }
  char text[32];
  std::snprintf(text, sizeof(text), i == 0 ? "%.0f%s" : "%.2f%s", value, suffix[i]);
  return text;
}

std::string format_bytes(double bytes) {
  const char* suffix[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (bytes >= 1024.0 && i < 4) {
    bytes /= 1024.0;
    ++i;
  }
  char text[32];
  std::snprintf(text, sizeof(text), i == 0 ? "%.0f %s" : "%.1f %s", bytes, suffix[i]);
  return text;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char text[32];
  if (s < 60)
    std::snprintf(text, sizeof(text), "%lds", s);
  else if (s < 3600)
    std::snprintf(text, sizeof(text), "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(text, sizeof(text), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  return text;
}

}  // namespace gum
