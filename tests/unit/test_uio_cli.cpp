// vscsi-uio's command-line parsing, data pattern and latency histogram.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "latency_histogram.hpp"
#include "options.hpp"
#include "pattern.hpp"

using namespace vscsi_uio;

namespace {
bool parse(std::vector<std::string> words, const option_spec& spec, options& o, std::string& err) {
    std::vector<char*> argv;
    for (std::string& w : words) argv.push_back(w.data());
    o = options{};
    o.command = words.size() > 1 ? words[1] : "";
    return parse_options(int(argv.size()), argv.data(), 2, spec, o, err);
}
}  // namespace

TEST_CASE("options: values, flags, --name=value, and every kind of mistake", "[uio][cli]") {
    const option_spec spec{{"-d", "--lba", "--count"}, {"--force", "--irq"}, 1};
    options o;
    std::string err;
    REQUIRE(parse({"vscsi-uio", "read", "-d", "00:04.0", "--lba=7", "--irq", "--count", "3"}, spec, o, err));
    CHECK(o.get("-d") == "00:04.0");
    CHECK(o.get("--lba") == "7");
    CHECK(o.get("--count") == "3");
    CHECK(o.flags.count("--irq"));
    CHECK(!o.has("--force"));
    REQUIRE(parse({"vscsi-uio", "bind", "0000:00:04.0", "--force"}, spec, o, err));
    CHECK(o.positional == std::vector<std::string>{"0000:00:04.0"});

    CHECK(!parse({"vscsi-uio", "read", "--frob"}, spec, o, err));
    CHECK(err == "unknown option '--frob' for 'read'");
    CHECK(!parse({"vscsi-uio", "read", "--lba"}, spec, o, err));
    CHECK(err == "option --lba needs a value");
    CHECK(!parse({"vscsi-uio", "read", "--lba", "1", "--lba", "2"}, spec, o, err));
    CHECK(err == "option --lba given twice");
    CHECK(!parse({"vscsi-uio", "read", "a", "b"}, spec, o, err));
    CHECK(err == "unexpected argument 'b' for 'read'");
    CHECK(!parse({"vscsi-uio", "read", "--force=yes"}, spec, o, err));
}

TEST_CASE("numbers: strict, in range; sizes with suffixes; seconds", "[uio][cli]") {
    uint64_t v = 0;
    CHECK(parse_u64("42", 0, 100, v));
    CHECK(v == 42);
    CHECK(parse_u64("0x10", 0, 100, v));
    CHECK(v == 16);
    for (const char* bad : {"", "-1", "4x", " 4", "101", "99999999999999999999999"}) CHECK(!parse_u64(bad, 0, 100, v));
    CHECK(parse_size("4k", 1, ~0ull, v));
    CHECK(v == 4096);
    CHECK(parse_size("64MiB", 1, ~0ull, v));
    CHECK(v == 64ull << 20);
    CHECK(parse_size("1g", 1, ~0ull, v));
    CHECK(v == 1ull << 30);
    CHECK(parse_size("512", 1, ~0ull, v));
    CHECK(v == 512);
    for (const char* bad : {"4q", "k", "4kk", "", "-4k", "99999999999999999999g"}) CHECK(!parse_size(bad, 1, ~0ull, v));
    CHECK(!parse_size("2m", 512, 1 << 20, v));
    double s = 0;
    CHECK(parse_seconds("2.5", 0.1, 10, s));
    CHECK(s == 2.5);
    CHECK(!parse_seconds("0", 0.1, 10, s));
    CHECK(!parse_seconds("nan", 0.1, 10, s));
    CHECK(!parse_seconds("3s", 0.1, 10, s));
}

TEST_CASE("the pattern depends on seed and disk offset only", "[uio][cli]") {
    // Known values of the documented formula (computed independently).
    CHECK(pattern_word(1, 0) == 0xe220a8397b1dcdafull);
    CHECK(pattern_word(7, 12345) == 0x1f6622b40cb38e42ull);
    uint8_t a[4096], b[1024];
    fill_pattern(a, 8192, sizeof a, 5);
    fill_pattern(b, 8192 + 2048, sizeof b, 5);  // a piece of the same range, written on its own
    CHECK(std::equal(b, b + sizeof b, a + 2048));
    CHECK(a[0] == uint8_t(pattern_word(5, 1024)));  // little-endian words
    fill_pattern(b, 8192 + 2048, sizeof b, 6);
    CHECK(!std::equal(b, b + sizeof b, a + 2048));
    // What bench --verify checks a read against: the same bytes, at the same place, only.
    CHECK(matches_pattern(a, 8192, sizeof a, 5));
    CHECK(matches_pattern(a + 2048, 8192 + 2048, 1024, 5));
    CHECK(!matches_pattern(a, 8192 + 4096, sizeof a, 5));  // the right data at the wrong LBA
    CHECK(!matches_pattern(a, 8192, sizeof a, 6));
    a[4095] ^= 1;
    CHECK(!matches_pattern(a, 8192, sizeof a, 5));          // the last byte counts
}

TEST_CASE("latency histogram: percentiles within a bucket's width", "[uio][cli]") {
    latency_histogram h;
    CHECK(h.percentile(50) == 0);
    for (uint64_t v = 1; v <= 100000; ++v) h.add(v * 10);  // uniform 10 ns .. 1 ms
    CHECK(h.count() == 100000);
    CHECK(h.min() == 10);
    CHECK(h.max() == 1000000);
    CHECK(h.mean() == Approx(500005).epsilon(1e-9));
    for (double p : {1.0, 50.0, 90.0, 99.0, 99.9}) {
        const double want = p / 100 * 1000000;
        CHECK(double(h.percentile(p)) == Approx(want).epsilon(0.05));
    }
    CHECK(h.percentile(100) == 1000000);
}
