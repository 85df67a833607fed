#include "cid/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace cid {

namespace {

// Length of the valid UTF-8 sequence at s[i] (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or 0 if the byte there starts none.
size_t Utf8Length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; k++) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

}  // namespace

// Paths are bytes.  Valid UTF-8 passes through; each byte that is not part
// of a valid UTF-8 sequence is written as the escape \udcXX (XX its value):
// the lone low surrogate Python's "surrogateescape" error handler uses, so
// os.fsencode(json.loads(text)) gives back the exact bytes.  No valid
// UTF-8 text produces such an escape, so the mapping is lossless.
std::string JsonWriter::Escape(std::string_view s) {
  std::string out;
  EscapeTo(s, &out);
  return out;
}

// Appends to *out: runs of bytes that need no escape (printable ASCII but
// '"' and '\\', the bulk of every path) are appended whole; `dups --json`
// writes a name per file.
void JsonWriter::EscapeTo(std::string_view s, std::string* out) {
  out->reserve(out->size() + s.size() + 2);
  *out += '"';
  size_t plain = 0;  // start of the run not yet appended
  auto flush = [&](size_t i) { out->append(s.data() + plain, i - plain); };
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      i++;
      continue;
    }
    size_t n = Utf8Length(s, i);
    if (n > 1) {  // valid UTF-8 passes through: it stays in the run
      i += n;
      continue;
    }
    flush(i);
    if (n == 0) {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\udc%02x", c);
      *out += buf;
      plain = ++i;
      continue;
    }
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\t': *out += "\\t"; break;
      case '\r': *out += "\\r"; break;
      default: {
        char buf[8];
        snprintf(buf, sizeof(buf), "\\u%04x", c);
        *out += buf;
      }
    }
    plain = ++i;
  }
  flush(s.size());
  *out += '"';
}

bool JsonWriter::FlushTo(FILE* f) {
  bool ok = fwrite(out_.data(), 1, out_.size(), f) == out_.size();
  out_.clear();
  return ok;
}

void JsonWriter::Key(std::string_view key) {
  if (!first_.back()) out_ += ",";
  first_.back() = false;
  if (!key.empty()) {
    EscapeTo(key, &out_);
    out_ += ':';
  }
}

JsonWriter& JsonWriter::BeginObject(std::string_view key) {
  Key(key);
  out_ += "{";
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  out_ += "}";
  first_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::BeginArray(std::string_view key) {
  Key(key);
  out_ += "[";
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  out_ += "]";
  first_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view key, std::string_view value) {
  Key(key);
  EscapeTo(value, &out_);
  return *this;
}

JsonWriter& JsonWriter::Uint(std::string_view key, uint64_t value) {
  Key(key);
  char buf[24];
  out_.append(buf, std::to_chars(buf, buf + sizeof(buf), value).ptr);
  return *this;
}

JsonWriter& JsonWriter::Int(std::string_view key, int64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonWriter& JsonWriter::Double(std::string_view key, double value) {
  Key(key);
  if (!std::isfinite(value)) {
    out_ += "null";
  } else {
    char buf[64];
    snprintf(buf, sizeof(buf), "%.6g", value);
    out_ += buf;
  }
  return *this;
}

JsonWriter& JsonWriter::Bool(std::string_view key, bool value) {
  Key(key);
  out_ += value ? "true" : "false";
  return *this;
}

}  // namespace cid
