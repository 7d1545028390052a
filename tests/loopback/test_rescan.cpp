// Missed events: after EVENTS_MISSED the caller rescans (checklist 20), and REPORT LUNS on
// every target finds what was added and what was removed while events were being dropped.
#include <catch2/catch.hpp>

#include <set>

#include <vscsi/scsi.hpp>

#include "initiator_fixture.hpp"

using namespace vscsi;

namespace {
template <class R>
std::set<std::pair<int, int>> scan(R& r, int max_target) {
    std::set<std::pair<int, int>> found;
    uint8_t cdb[16];
    const uint32_t n = scsi::report_luns(cdb, 16, 4096);
    for (int t = 0; t <= max_target; ++t) {
        io_completion c = r.command(uint8_t(t), wlun_report_luns, std::vector<uint8_t>(cdb, cdb + n), r.buf(), 4096);
        if (c.outcome == io_outcome::bad_target) continue;
        REQUIRE(c.outcome == io_outcome::good);
        scsi::report_luns_entries(r.buf(), c.transferred, [&](const uint8_t* e) {
            const decoded_lun d = decode_sam_lun(e);
            REQUIRE(d.valid);
            found.insert({t, d.lun});
            return true;
        });
    }
    return found;
}
}  // namespace

TEST_CASE("after EVENTS_MISSED a rescan finds added and removed LUNs", "[loopback][events]") {
    loopback::options o;
    o.kind = loopback::personality::modern;
    fixture::rig<modern_pci<loopback::device>> r(o);
    r.dev->add_lun(0, 0, 64);
    r.dev->add_lun(0, 1, 64);
    r.dev->add_lun(1, 0, 64);
    REQUIRE(r.start() == status::ok);
    CHECK(scan(r, 3) == std::set<std::pair<int, int>>{{0, 0}, {0, 1}, {1, 0}});

    // Events are lost while the topology changes.
    r.dev->fault().drop_events = true;
    r.dev->add_lun(0, 7, 64);
    r.dev->add_lun(2, 0, 64);
    r.dev->remove_lun(0, 1);
    r.settle();
    CHECK(r.rec.events.empty());
    r.dev->fault().drop_events = false;
    // The next event carries EVENTS_MISSED: the caller must not trust its own picture.
    r.dev->resize_lun(1, 0, 128);
    r.settle();
    REQUIRE(r.rec.events.size() == 1);
    CHECK(r.rec.events[0].missed);
    CHECK(r.rec.events[0].type == event_type::param_change);
    CHECK(scan(r, 3) == std::set<std::pair<int, int>>{{0, 0}, {0, 7}, {1, 0}, {2, 0}});
    // The LUNs that saw the change report it as a unit attention too (checklist 22).
    io_completion c = r.command(0, 0, fixture::tur(), nullptr, 0);
    CHECK(c.outcome == io_outcome::check_condition);
    CHECK(r.dev->violations().empty());
}
