#include "options.hpp"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

namespace vscsi_uio {

bool parse_options(int argc, char** argv, int first, const option_spec& spec, options& out, std::string& err) {
    for (int i = first; i < argc; ++i) {
        std::string a = argv[i];
        std::string value;
        bool inline_value = false;
        if (a.size() > 2 && a[0] == '-' && a[1] == '-') {
            const size_t eq = a.find('=');
            if (eq != std::string::npos) {
                value = a.substr(eq + 1);
                a = a.substr(0, eq);
                inline_value = true;
            }
        }
        if (a.size() > 1 && a[0] == '-') {
            if (spec.with_value.count(a)) {
                if (!inline_value) {
                    if (i + 1 >= argc) {
                        err = "option " + a + " needs a value";
                        return false;
                    }
                    value = argv[++i];
                }
                if (out.values.count(a)) {
                    err = "option " + a + " given twice";
                    return false;
                }
                out.values[a] = value;
            } else if (spec.flags.count(a) && !inline_value) {
                out.flags.insert(a);
            } else {
                err = "unknown option '" + std::string(argv[i]) + "' for '" + out.command + "'";
                return false;
            }
            continue;
        }
        if (out.positional.size() >= spec.max_positional) {
            err = "unexpected argument '" + a + "' for '" + out.command + "'";
            return false;
        }
        out.positional.push_back(a);
    }
    return true;
}

bool parse_u64(const std::string& s, uint64_t lo, uint64_t hi, uint64_t& out) {
    if (s.empty() || !isdigit(uint8_t(s[0]))) return false;
    errno = 0;
    char* end = nullptr;
    const unsigned long long v = strtoull(s.c_str(), &end, 0);
    if (errno || *end || v < lo || v > hi) return false;
    out = v;
    return true;
}

bool parse_size(const std::string& s, uint64_t lo, uint64_t hi, uint64_t& out) {
    if (s.empty() || !isdigit(uint8_t(s[0]))) return false;
    errno = 0;
    char* end = nullptr;
    unsigned long long v = strtoull(s.c_str(), &end, 10);
    if (errno) return false;
    unsigned shift = 0;
    if (*end) {
        switch (tolower(uint8_t(*end))) {
            case 'k': shift = 10; break;
            case 'm': shift = 20; break;
            case 'g': shift = 30; break;
            default: return false;
        }
        ++end;
        if (*end == 'i' || *end == 'I') ++end;  // "4KiB"
        if (*end == 'b' || *end == 'B') ++end;
        if (*end) return false;
    }
    if (v > (~0ull >> shift)) return false;
    v <<= shift;
    if (v < lo || v > hi) return false;
    out = v;
    return true;
}

bool parse_seconds(const std::string& s, double lo, double hi, double& out) {
    if (s.empty()) return false;
    errno = 0;
    char* end = nullptr;
    const double v = strtod(s.c_str(), &end);
    if (errno || *end || !(v >= lo && v <= hi)) return false;
    out = v;
    return true;
}

}  // namespace vscsi_uio
