// After set-up, nothing in the data path allocates: 100,000 I/Os through the initiator and
// the loopback device with every heap entry point counted.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <new>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

extern "C" void* __libc_malloc(size_t);
extern "C" void* __libc_calloc(size_t, size_t);
extern "C" void* __libc_realloc(void*, size_t);
extern "C" void __libc_free(void*);

namespace {
bool armed = false;
unsigned long allocations = 0;
void note() {
    if (armed) ++allocations;
}
}  // namespace

// glibc's allocator underneath; every call counted while armed. (Sanitizer builds supply
// their own malloc, so this file is built without sanitizers.)
extern "C" void* malloc(size_t n) {
    note();
    return __libc_malloc(n);
}
extern "C" void* calloc(size_t a, size_t b) {
    note();
    return __libc_calloc(a, b);
}
extern "C" void* realloc(void* p, size_t n) {
    note();
    return __libc_realloc(p, n);
}
extern "C" void free(void* p) { __libc_free(p); }
void* operator new(size_t n) {
    note();
    void* p = __libc_malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, size_t) noexcept { __libc_free(p); }

using namespace vscsi;

namespace {
// Counts completions without touching the heap (the fixture's recorder keeps vectors).
struct quiet_handler {
    uint64_t done = 0, bad = 0, last_slot = 0;
    void on_complete(const io_completion& c) {
        ++done;
        bad += c.outcome != io_outcome::good;
        last_slot = c.user_data;
    }
    void on_tmf(const tmf_completion&) {}
    void on_an(const an_completion&) {}
    void on_event(const event_info&) {}
};
}  // namespace

TEST_CASE("100,000 I/Os after set-up allocate nothing", "[loopback][alloc]") {
    // The counter works: an allocation while armed is seen.
    armed = true;
    void* volatile probe = malloc(16);
    armed = false;
    free(probe);
    REQUIRE(allocations == 1);
    allocations = 0;

    loopback::options o;
    o.kind = loopback::personality::modern;
    fixture::rig<modern_pci<loopback::device>> r(o);
    r.dev->add_lun(0, 0, 4096);
    REQUIRE(r.start() == status::ok);
    REQUIRE(r.command(0, 0, fixture::tur(), nullptr, 0).outcome == io_outcome::check_condition);

    uint8_t cdbs[32][16];
    sg_entry sgs[32];
    quiet_handler h;
    uint64_t submitted = 0;
    uint32_t rng = 1;
    armed = true;
    while (h.done < 100000) {
        for (uint32_t i = 0; i < 32 && submitted - h.done < 32; ++i) {
            const uint32_t slot = uint32_t(submitted % 32);
            rng = rng * 1103515245u + 12345u;
            const bool write = rng & 0x100;
            const uint32_t n = scsi::read_write(cdbs[slot], 16, write, (rng >> 8) % 4000, 8);
            sgs[slot] = sg_entry{r.data->bus + uint64_t(slot) * 4096, 4096};
            io_request q{};
            q.cdb = cdbs[slot];
            q.cdb_len = n;
            (write ? q.data_out : q.data_in) = &sgs[slot];
            (write ? q.n_out : q.n_in) = 1;
            q.user_data = slot;
            if (r.ini->submit(q, r.now).st != status::ok) break;
            ++submitted;
        }
        r.ini->kick();
        r.dev->step();
        r.ini->poll(r.now, h);
    }
    armed = false;
    CHECK(h.bad == 0);
    CHECK(h.done >= 100000);
    CHECK(allocations == 0);
}
