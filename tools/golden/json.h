// A small JSON reader, enough for the golden-case descriptions: objects, arrays, numbers, strings,
// true/false/null (plus NaN / Infinity, which Python's json module writes for non-finite floats).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace nattn::golden {

struct Json {
  enum class Kind { null, boolean, number, string, array, object };

  Kind kind = Kind::null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // in file order

  // The member `key` of an object, or nullptr (also when this is not an object).
  const Json* find(const std::string& key) const;
};

const char* kind_name(Json::Kind kind);  // "null", "bool", "number", "string", "array", "object"

// Parses a whole document; throws nattn::ValueError naming `source`, the line and column.
Json parse_json(const std::string& text, const std::string& source);

}  // namespace nattn::golden
