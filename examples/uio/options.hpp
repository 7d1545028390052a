// Command-line options of vscsi-uio: every command states which options it takes, and
// anything else is an error naming the offending word.
#pragma once
#include <stdint.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace vscsi_uio {

struct options {
    std::string command;
    std::vector<std::string> positional;
    std::map<std::string, std::string> values;  // "--lba" -> "100"
    std::set<std::string> flags;                // "--force"

    bool has(const std::string& name) const { return values.count(name) || flags.count(name); }
    std::string get(const std::string& name, const std::string& fallback = {}) const {
        auto it = values.find(name);
        return it == values.end() ? fallback : it->second;
    }
};

// Which options a command accepts: those taking a value and plain flags.
struct option_spec {
    std::set<std::string> with_value;
    std::set<std::string> flags;
    unsigned max_positional = 0;
};

// Parse argv[first..] against spec; on failure `err` is a one-line message.
bool parse_options(int argc, char** argv, int first, const option_spec& spec, options& out, std::string& err);

// Strict number parsing: the whole word, within [lo, hi]. Sizes take k/m/g suffixes (powers
// of 1024); seconds may be fractional.
bool parse_u64(const std::string& s, uint64_t lo, uint64_t hi, uint64_t& out);
bool parse_size(const std::string& s, uint64_t lo, uint64_t hi, uint64_t& out);
bool parse_seconds(const std::string& s, double lo, double hi, double& out);

}  // namespace vscsi_uio
