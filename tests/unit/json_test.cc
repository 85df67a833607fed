#include "cid/json.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

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

// Plain runs are appended whole: escapes at either end of one, and a
// listing flushed to a file in pieces, give the same text as one string.
TEST(JsonTest, FlushedPiecesMakeTheSameText) {
  EXPECT_EQ(JsonWriter::Escape("\tab/c\x7f\x1f"), "\"\\tab/c\x7f\\u001f\"");
  JsonWriter whole, pieces;
  FILE* f = tmpfile();
  ASSERT_NE(f, nullptr);
  for (JsonWriter* w : {&whole, &pieces}) {
    w->BeginObject().BeginArray("paths");
    for (int i = 0; i < 3; i++) {
      w->String("/usr/lib/\xc3\xa9" + std::to_string(i));
      if (w == &pieces) {
        ASSERT_TRUE(w->FlushTo(f));
      }
    }
    w->EndArray().EndObject();
  }
  ASSERT_TRUE(pieces.FlushTo(f));
  rewind(f);
  char buf[256] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  EXPECT_EQ(std::string(buf, n), whole.str());
  EXPECT_TRUE(pieces.str().empty());
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
