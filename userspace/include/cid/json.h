// A small streaming JSON writer for --json output: objects and arrays are
// opened and closed explicitly; commas and string escaping are handled here.
#ifndef CID_JSON_H_
#define CID_JSON_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace cid {

class JsonWriter {
 public:
  JsonWriter() = default;
  JsonWriter(const JsonWriter&) = delete;
  JsonWriter& operator=(const JsonWriter&) = delete;

  JsonWriter& BeginObject(std::string_view key = {});
  JsonWriter& EndObject();
  JsonWriter& BeginArray(std::string_view key = {});
  JsonWriter& EndArray();
  JsonWriter& String(std::string_view key, std::string_view value);
  JsonWriter& Uint(std::string_view key, uint64_t value);
  JsonWriter& Int(std::string_view key, int64_t value);
  JsonWriter& Double(std::string_view key, double value);
  JsonWriter& Bool(std::string_view key, bool value);
  // Array elements.
  JsonWriter& String(std::string_view value) { return String({}, value); }

  const std::string& str() const { return out_; }
  // Writes what is buffered to `f` and empties the buffer (a long listing
  // streams instead of growing one string of megabytes); false if the write
  // failed.
  bool FlushTo(FILE* f);
  static std::string Escape(std::string_view s);
  static void EscapeTo(std::string_view s, std::string* out);  // appends Escape(s)

 private:
  void Key(std::string_view key);

  std::string out_;
  std::vector<bool> first_{true};  // per open container: no element yet
};

}  // namespace cid

#endif  // CID_JSON_H_
