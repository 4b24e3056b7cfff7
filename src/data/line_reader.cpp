#include "line_reader.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "gum/core/error.h"

namespace gum {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

bool file_starts_with_gzip_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) runtime_error(path, ": cannot open file: ", std::strerror(errno));
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

gzFile open_stream(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) runtime_error(path, ": cannot open file: ", std::strerror(errno));
  gzbuffer(file, 1 << 18);
  return file;
}

}  // namespace

LineReader::LineReader(const std::string& path) : path_(path) {
  const bool gzip = file_starts_with_gzip_magic(path);
  if (!gzip && ends_with(path, ".gz")) runtime_error(path, ": not gzip data (the name ends in .gz)");
  file_ = open_stream(path);
  chunk_.resize(kChunkBytes);
}

LineReader::~LineReader() {
  if (file_) gzclose(file_);
  if (second_) gzclose(second_);
}

void LineReader::check_stream(gzFile file, int n, uint64_t lines_so_far) const {
  int code = Z_OK;
  const char* message = gzerror(file, &code);
  // zlib reports a truncated member as Z_BUF_ERROR ("unexpected end of file") and keeps
  // returning 0, so a clean end of file and a truncated one differ only in the error code.
  if (n < 0 || (code != Z_OK && code != Z_STREAM_END))
    runtime_error(path_, ": bad gzip data after line ", lines_so_far, ": ", message ? message : "read error",
                  code == Z_BUF_ERROR ? " (truncated file?)" : "");
}

void LineReader::for_each_line_part(const PartCallback& on_part) {
  lines_ = 0;
  line_start_ = 0;
  line_length_ = 0;
  uint64_t offset = 0;        // uncompressed offset of the chunk
  bool line_started = false;  // a byte of the current line (or a held "\r") was read
  bool held_cr = false;       // a "\r" ended the last chunk: part of the line unless "\n" follows
  auto deliver = [&](std::string_view part, bool line_ends) {
    line_length_ += part.size();
    const uint64_t number = lines_ + 1;
    if (line_ends) ++lines_;
    return on_part(part, number, line_ends);
  };
  while (true) {
    const int n = gzread(file_, chunk_.data(), static_cast<unsigned>(chunk_.size()));
    check_stream(file_, n, lines_);
    if (n == 0) break;
    std::string_view data(chunk_.data(), static_cast<size_t>(n));
    size_t start = 0;
    if (held_cr) {
      held_cr = false;
      if (data.front() != '\n' && !deliver("\r", false)) return;
    }
    while (start < data.size()) {
      line_started = true;
      const size_t newline = data.find('\n', start);
      if (newline == std::string_view::npos) {
        std::string_view part = data.substr(start);
        if (part.back() == '\r') {
          part.remove_suffix(1);
          held_cr = true;
        }
        if (!part.empty() && !deliver(part, false)) return;
        break;
      }
      std::string_view part = data.substr(start, newline - start);
      // A "\r" held from the last chunk was this line end's.
      if (!part.empty() && part.back() == '\r') part.remove_suffix(1);
      if (!deliver(part, true)) return;
      start = newline + 1;
      line_start_ = offset + start;
      line_length_ = 0;
      line_started = false;
    }
    offset += static_cast<uint64_t>(n);
  }
  if (line_started) deliver("", true);
}

void LineReader::for_each_line(const std::function<bool(std::string_view line, uint64_t line_number)>& on_line) {
  std::string line;
  for_each_line_part([&](std::string_view part, uint64_t line_number, bool line_ends) {
    if (!line_ends) {
      line.append(part);
      return true;
    }
    if (line.empty()) return on_line(part, line_number);
    line.append(part);
    const bool keep_going = on_line(line, line_number);
    line.clear();
    return keep_going;
  });
}

void LineReader::reread_line(const std::function<void(std::string_view part)>& on_part) {
  if (!second_) {
    second_ = open_stream(path_);
    second_chunk_.resize(kChunkBytes);
  }
  // Lines only move forward, so this seek decompresses the bytes since the last reread once.
  if (gzseek(second_, static_cast<z_off_t>(line_start_), SEEK_SET) < 0) check_stream(second_, -1, lines_);
  uint64_t left = line_length_;
  while (left > 0) {
    const unsigned want = static_cast<unsigned>(std::min<uint64_t>(left, second_chunk_.size()));
    const int n = gzread(second_, second_chunk_.data(), want);
    check_stream(second_, n, lines_);
    if (n == 0) runtime_error(path_, ":", lines_, ": the file ended while reading the line again (changed on disk?)");
    on_part(std::string_view(second_chunk_.data(), static_cast<size_t>(n)));
    left -= static_cast<uint64_t>(n);
  }
}

}  // namespace gum
