// Structured fuzz input: the fuzzer's bytes read front to back as a sequence of actions,
// each an opcode byte followed by its arguments. Reading past the end yields zeros, so every
// byte string decodes to something, and seeds are short byte strings written by hand.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <vector>

namespace fuzz {

class input {
public:
    input(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

    bool done() const { return p_ >= end_; }
    uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
    uint16_t u16() {
        const uint16_t lo = u8();
        return uint16_t(lo | u8() << 8);
    }
    uint32_t u32() {
        const uint32_t lo = u16();
        return lo | uint32_t(u16()) << 16;
    }
    uint64_t u64() {
        const uint64_t lo = u32();
        return lo | uint64_t(u32()) << 32;
    }
    bool flag() { return u8() & 1; }
    // A value in [0, n) from one byte (n <= 256), 0 when n is 0.
    uint32_t below(uint32_t n) { return n ? u8() % n : 0; }

private:
    const uint8_t* p_;
    const uint8_t* end_;
};

// The writing side, for seeds: the same encoding, built up action by action.
class seed {
public:
    seed& u8(uint8_t v) {
        bytes.push_back(v);
        return *this;
    }
    seed& u16(uint16_t v) { return u8(uint8_t(v)).u8(uint8_t(v >> 8)); }
    seed& u32(uint32_t v) { return u16(uint16_t(v)).u16(uint16_t(v >> 16)); }
    seed& u64(uint64_t v) { return u32(uint32_t(v)).u32(uint32_t(v >> 32)); }
    std::vector<uint8_t> bytes;
};

}  // namespace fuzz
