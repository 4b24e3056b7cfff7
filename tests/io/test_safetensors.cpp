#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gum/core/error.h"
#include "gum/io/safetensors.h"

namespace fs = std::filesystem;
using namespace gum;

namespace {

fs::path scratch_dir() {
  fs::path dir = fs::path(GUM_BINARY_DIR) / "test_scratch" / "safetensors";
  fs::create_directories(dir);
  return dir;
}

HostTensor patterned(DType dtype, Shape shape, uint8_t salt) {
  HostTensor t(dtype, shape);
  for (size_t i = 0; i < t.bytes.size(); ++i) t.bytes[i] = static_cast<uint8_t>(i * 31 + salt);
  return t;
}

// A file from a raw header text and data bytes, for the malformed cases.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      int64_t declared_length = -1) {
  std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  uint64_t length = declared_length >= 0 ? static_cast<uint64_t>(declared_length) : header.size();
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<uint8_t>(length >> (8 * i));
  out.write(reinterpret_cast<const char*>(le), 8);
  out << header;
  std::vector<char> data(data_bytes, 7);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return path;
}

// The message of the gum::Error that reading `path` throws ("" if none).
std::string read_error(const std::string& path) {
  try {
    read_safetensors(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype") {
  TensorMap tensors;
  tensors["a.f32"] = HostTensor::from_f32(Shape{2, 3}, {1, -2, 3.5f, 0, 1e-30f, -7});
  tensors["b.bf16"] = patterned(DType::BF16, Shape{4, 5}, 1);
  tensors["c.f16"] = patterned(DType::F16, Shape{3}, 2);
  tensors["d.f64"] = patterned(DType::F64, Shape{2, 2, 2}, 3);
  tensors["e.i32"] = patterned(DType::I32, Shape{7}, 4);
  tensors["f.i64"] = patterned(DType::I64, Shape{1, 1, 1, 3}, 5);
  tensors["g.u16"] = patterned(DType::U16, Shape{5}, 6);
  tensors["h.u8"] = patterned(DType::U8, Shape{13}, 7);  // odd size: later offsets unaligned
  tensors["i.scalar"] = patterned(DType::F32, Shape{}, 8);
  tensors["j.empty"] = HostTensor(DType::F32, Shape{0, 4});
  std::string path = (scratch_dir() / "round_trip.safetensors").string();
  write_safetensors(path, tensors, {{"step", "100"}, {"note", "unicode \xc3\xa9"}});

  std::map<std::string, std::string> metadata;
  TensorMap back = read_safetensors(path, &metadata);
  REQUIRE(back.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    REQUIRE(back.count(name) == 1);
    CHECK(back[name].dtype == t.dtype);
    CHECK(back[name].shape == t.shape);
    CHECK(back[name].bytes == t.bytes);
  }
  CHECK(metadata.at("format") == "pt");
  CHECK(metadata.at("step") == "100");
  CHECK(metadata.at("note") == "unicode \xc3\xa9");

  // The header is space padded to a multiple of 8 and starts with '{'.
  std::ifstream in(path, std::ios::binary);
  uint8_t le[8];
  in.read(reinterpret_cast<char*>(le), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | le[i];
  CHECK(header_len % 8 == 0);
  CHECK(in.get() == '{');

  SafetensorsHeader header = read_safetensors_header(path);
  CHECK(header.data_section_offset == 8 + header_len);
  CHECK(header.tensors.at("b.bf16").shape == Shape({4, 5}));
  TensorMap some = read_safetensors_tensors(path, header, {"e.i32", "h.u8"});
  CHECK(some.size() == 2);
  CHECK(some["h.u8"].bytes == tensors["h.u8"].bytes);
  CHECK_THROWS_WITH(read_safetensors_tensors(path, header, {"nope"}), Catch::Contains("'nope'"));
}

TEST_CASE("safetensors format key is always written") {
  std::string path = (scratch_dir() / "format.safetensors").string();
  write_safetensors(path, {{"x", HostTensor::from_f32(Shape{1}, {1})}});
  std::map<std::string, std::string> metadata;
  read_safetensors(path, &metadata);
  CHECK(metadata == std::map<std::string, std::string>{{"format", "pt"}});
}

TEST_CASE("safetensors reader refuses malformed files") {
  const std::string good_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

  SECTION("missing file") {
    CHECK_THAT(read_error((scratch_dir() / "does_not_exist.safetensors").string()), Catch::Contains("cannot open"));
  }
  SECTION("too short for the length") {
    std::string path = (scratch_dir() / "short.safetensors").string();
    std::ofstream(path, std::ios::binary) << "abc";
    CHECK_THAT(read_error(path), Catch::Contains("short.safetensors") && Catch::Contains("too short"));
  }
  SECTION("implausible header length (bad magic)") {
    std::string path = write_raw("huge_len.safetensors", "{" + good_entry + "}", 8, int64_t(1) << 40);
    CHECK_THAT(read_error(path), Catch::Contains("implausible header length"));
  }
  SECTION("header longer than the file") {
    std::string path = write_raw("long_len.safetensors", "{" + good_entry + "}", 0, 4000);
    CHECK_THAT(read_error(path), Catch::Contains("exceeds the file size"));
  }
  SECTION("header not starting with a brace") {
    std::string path = write_raw("nobrace.safetensors", " {" + good_entry + "}", 8);
    CHECK_THAT(read_error(path), Catch::Contains("does not start with '{'"));
  }
  SECTION("header not JSON") {
    std::string path = write_raw("notjson.safetensors", "{\"w\":", 8);
    CHECK_THAT(read_error(path), Catch::Contains("not valid JSON"));
  }
  SECTION("truncated data") {
    std::string path = write_raw("truncated.safetensors", "{" + good_entry + "}", 5);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("out of range"));
  }
  SECTION("trailing bytes") {
    std::string path = write_raw("trailing.safetensors", "{" + good_entry + "}", 12);
    CHECK_THAT(read_error(path), Catch::Contains("trailing bytes"));
  }
  SECTION("overlapping offsets") {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    std::string path = write_raw("overlap.safetensors", header, 12);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'b'") && Catch::Contains("overlap tensor 'a'"));
  }
  SECTION("gap between tensors") {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})";
    std::string path = write_raw("gap.safetensors", header, 20);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'b'") && Catch::Contains("gap"));
  }
  SECTION("first tensor not at offset 0") {
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
    std::string path = write_raw("gap0.safetensors", header, 12);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'a'") && Catch::Contains("gap"));
  }
  SECTION("unknown dtype") {
    std::string header = R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})";
    std::string path = write_raw("dtype.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("F8_E4M3"));
  }
  SECTION("shape and size disagree") {
    std::string header = R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
    std::string path = write_raw("size.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("needs 12 bytes"));
  }
  SECTION("negative dimension") {
    std::string header = R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})";
    std::string path = write_raw("negdim.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("non-negative"));
  }
  SECTION("too many dimensions") {
    std::string header = R"({"w":{"dtype":"U8","shape":[1,1,1,1,8],"data_offsets":[0,8]}})";
    std::string path = write_raw("rank5.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("dimensions"));
  }
  SECTION("missing and unknown fields") {
    std::string path = write_raw("nooffsets.safetensors", R"({"w":{"dtype":"F32","shape":[2]}})", 8);
    CHECK_THAT(read_error(path), Catch::Contains("tensor 'w'") && Catch::Contains("data_offsets"));
    path = write_raw("extra.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}})", 8);
    CHECK_THAT(read_error(path), Catch::Contains("unknown field 'stride'"));
  }
  SECTION("end before begin") {
    std::string header = R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})";
    std::string path = write_raw("backwards.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("end before begin"));
  }
  SECTION("metadata values must be strings") {
    std::string header = R"({"__metadata__":{"step":100},)" + good_entry + "}";
    std::string path = write_raw("meta.safetensors", header, 8);
    CHECK_THAT(read_error(path), Catch::Contains("__metadata__ key 'step'"));
  }
  SECTION("a correct hand-written file reads") {
    std::string path = write_raw("handmade.safetensors", "{" + good_entry + "}   ", 8);
    TensorMap t = read_safetensors(path);
    CHECK(t.at("w").shape == Shape({2}));
  }
}

TEST_CASE("safetensors writer refuses inconsistent tensors") {
  HostTensor bad(DType::F32, Shape{4});
  bad.bytes.resize(3);
  std::string path = (scratch_dir() / "bad_write.safetensors").string();
  CHECK_THROWS_WITH(write_safetensors(path, {{"bad", bad}}), Catch::Contains("tensor 'bad'"));
}
