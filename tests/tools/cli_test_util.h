// Helpers of the CLI tests (test_cli_verify, test_cli_profile, test_cli_profile_cuda): run the built
// CLI (NATTN_CLI_PATH, or $NATTN_CLI when set: for test binaries carried to another machine) with
// stdout and stderr captured, and a minimal JSON parser for `nattn profile --json` output.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace nattn::test::cli {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream ss;
  ss << file.rdbuf();
  return ss.str();
}

inline std::string shell_quote(const std::string& word) {
  std::string out = "'";
  for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Per process, so that test programs running in parallel do not share files.
inline std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "nattn_cli_" + std::to_string(getpid()) + "_" + name;
}

// Runs `nattn SUBCOMMAND ARGS...` with stdout and stderr captured separately.
inline CliResult run_cli(const std::string& subcommand, const std::vector<std::string>& args) {
  const std::string out_path = temp_path("stdout.txt");
  const std::string err_path = temp_path("stderr.txt");
  const char* cli = std::getenv("NATTN_CLI");
  std::string command = shell_quote(cli != nullptr && cli[0] != '\0' ? cli : NATTN_CLI_PATH) + " " + subcommand;
  for (const std::string& a : args) command += " " + shell_quote(a);
  command += " >" + shell_quote(out_path) + " 2>" + shell_quote(err_path) + " </dev/null";
  const int status = std::system(command.c_str());
  CliResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

inline CliResult run_profile(const std::vector<std::string>& args) { return run_cli("profile", args); }

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A small 2-D problem that every CPU backend runs in milliseconds.
inline std::vector<std::string> small_problem(std::vector<std::string> extra) {
  std::vector<std::string> args{"-i", "12", "10", "-w", "3", "5", "-n", "2", "-d", "16",
                                "--warmup-steps", "1", "--iterations", "3", "--no-progress"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// ---- a minimal JSON parser (enough to check the --json output is valid and has its keys) ------

struct Json {
  enum class Type { null, boolean, number, string, array, object } type = Type::null;
  bool boolean = false;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> members;
  const Json& at(const std::string& key) const {
    static const Json missing;
    auto it = members.find(key);
    return it == members.end() ? missing : it->second;
  }
  bool has(const std::string& key) const { return members.count(key) != 0; }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}
  // Throws std::runtime_error on any syntax error, including trailing garbage.
  Json parse() {
    Json v = value();
    skip();
    if (i_ != s_.size()) error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& what) {
    throw std::runtime_error("JSON error at offset " + std::to_string(i_) + ": " + what);
  }
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) error(std::string("expected '") + c + "'");
  }
  bool literal(const char* word) {
    const std::string w = word;
    if (s_.compare(i_, w.size(), w) == 0) {
      i_ += w.size();
      return true;
    }
    return false;
  }
  std::string string_body() {
    expect('"');
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (static_cast<unsigned char>(s_[i_]) < 0x20) error("control character in string");
      if (s_[i_] == '\\') {
        ++i_;
        if (i_ >= s_.size()) error("bad escape");
        const char e = s_[i_];
        if (e == 'u') {
          if (i_ + 4 >= s_.size()) error("bad \\u escape");
          i_ += 4;
          out += '?';
        } else if (std::string("\"\\/bfnrt").find(e) == std::string::npos) {
          error("bad escape");
        } else {
          out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        }
        ++i_;
      } else {
        out += s_[i_++];
      }
    }
    expect('"');
    return out;
  }
  Json value() {
    skip();
    if (i_ >= s_.size()) error("unexpected end");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      v.type = Json::Type::object;
      ++i_;
      if (eat('}')) return v;
      do {
        skip();
        const std::string key = string_body();
        expect(':');
        v.members[key] = value();
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      v.type = Json::Type::array;
      ++i_;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.type = Json::Type::string;
      v.text = string_body();
    } else if (literal("true")) {
      v.type = Json::Type::boolean;
      v.boolean = true;
    } else if (literal("false")) {
      v.type = Json::Type::boolean;
    } else if (literal("null")) {
      v.type = Json::Type::null;
    } else {
      size_t used = 0;
      try {
        v.number = std::stod(s_.substr(i_), &used);
      } catch (const std::exception&) {
        error("bad value");
      }
      v.type = Json::Type::number;
      i_ += used;
    }
    return v;
  }
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace nattn::test::cli
