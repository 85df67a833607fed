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
