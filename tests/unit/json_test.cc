#include "cid/json.h"

#include <gtest/gtest.h>

namespace cid {
namespace {

TEST(JsonTest, NestedContainersAndCommas) {
  JsonWriter w;
  w.BeginObject().Uint("a", 1).BeginArray("b").String("x").String("y").EndArray().BeginObject("c").Bool("d", true)
      .Int("e", -2).EndObject().EndObject();
  EXPECT_EQ(w.str(), R"({"a":1,"b":["x","y"],"c":{"d":true,"e":-2}})");
}

TEST(JsonTest, EscapesPathsWithControlCharacters) {
  EXPECT_EQ(JsonWriter::Escape("a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"");
}

}  // namespace
}  // namespace cid

namespace cid {
namespace {

// Paths are bytes: --json must stay valid JSON for names that are not
// UTF-8, and keep every byte (Python's surrogateescape form, \udcXX).
TEST(JsonTest, NonUtf8BytesAreEscapedLosslessly) {
  EXPECT_EQ(JsonWriter::Escape("a\xff" "b"), "\"a\\udcffb\"");
  EXPECT_EQ(JsonWriter::Escape("\xc3\xa9t\xc3\xa9"), "\"\xc3\xa9t\xc3\xa9\"");  // valid UTF-8 passes
  EXPECT_EQ(JsonWriter::Escape("\xc3"), "\"\\udcc3\"");                       // truncated sequence
  EXPECT_EQ(JsonWriter::Escape("\xc0\xaf"), "\"\\udcc0\\udcaf\"");            // overlong '/'
  EXPECT_EQ(JsonWriter::Escape("\xed\xa0\x80"), "\"\\udced\\udca0\\udc80\"");  // an encoded surrogate
  EXPECT_EQ(JsonWriter::Escape("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");   // 4-byte UTF-8 passes
}

}  // namespace
}  // namespace cid
