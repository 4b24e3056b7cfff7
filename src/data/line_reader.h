#pragma once
// Streams the lines of a plain or gzip file (zlib reads plain files transparently) in fixed-size
// chunks. for_each_line_part holds no line: memory is one chunk whatever the line lengths;
// for_each_line holds the current line.
#include <zlib.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gum {

class LineReader {
 public:
  // Opens `path`; a name ending in .gz that does not hold gzip data is an error.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Receives a line's bytes in order, in parts of at most one chunk, without the line end ("\n"
  // or "\r\n"; a final "\r" at the end of the file too); `line_ends` marks its last part (which
  // may be empty). Returning false stops reading. The last line needs no final newline.
  using PartCallback = std::function<bool(std::string_view part, uint64_t line_number, bool line_ends)>;
  void for_each_line_part(const PartCallback& on_part);

  // Whole lines (the current one held in memory).
  void for_each_line(const std::function<bool(std::string_view line, uint64_t line_number)>& on_line);

  // From inside the callback of a line's last part: delivers that line's bytes again, in parts
  // of at most one chunk, from a second handle on the file that only moves forward (a second
  // pass over one line without holding it).
  void reread_line(const std::function<void(std::string_view part)>& on_part);

 private:
  void check_stream(gzFile file, int n, uint64_t lines_so_far) const;

  std::string path_;
  gzFile file_ = nullptr;
  gzFile second_ = nullptr;  // opened by the first reread_line
  std::vector<char> chunk_;
  std::vector<char> second_chunk_;
  uint64_t line_start_ = 0;   // uncompressed offset of the current line
  uint64_t line_length_ = 0;  // its bytes so far, without the line end
  uint64_t lines_ = 0;
};

}  // namespace gum
