// vscsi-uio list, bind, unbind: the PCI functions and who drives them.
#include <unistd.h>

#include <vscsi/pci.hpp>

#include <fmt/core.h>

#include <string>
#include <vector>

#include "session.hpp"
#include "function_lock.hpp"

namespace vscsi_uio {

using namespace vscsi;
using vscsi::uio::command_result;
using vscsi::uio::controller;

int cmd_list(const options&) {
    const uio::host_paths hp;
    const std::vector<uio::pci_function> all = uio::find_virtio_scsi(hp);
    if (all.empty()) {
        fmt::print("no virtio-scsi PCI functions\n");
        return 0;
    }
    fmt::print("{:<14} {:<10} {:<17} {:<13} {:<6} {}\n", "PCI", "ID", "driver", "interface", "iommu", "queues");
    for (const uio::pci_function& f : all) {
        const uio::interfaces itf = uio::probe_interfaces(hp, f);
        std::string queues = "-";
        // The request queue count is a read-only config field; reading it disturbs no driver.
        uio::bar_bus bus;
        std::string err;
        // Not while a vscsi-uio drives it through vfio: the BARs belong to that process then.
        if (geteuid() == 0 && f.driver != uio::vfio_driver && bus.open(hp, f.bdf, err)) {
            const uint16_t cmd = bus.config_read16(pci_cfg::command);
            uio::pci_transport t(bus);
            bool ok = false;
            if ((cmd & pci_cfg::command_memory) && t.probe_modern()) {
                t.use(false);
                ok = true;
            } else if ((cmd & pci_cfg::command_io) && t.probe_legacy(bus.bar_is_io(0))) {
                t.use(true);
                ok = true;
            }
            if (ok) queues = std::to_string(t.config_read32(config_offset::num_queues));
        }
        // The IOMMU group: vfio takes the function only when the group is its own.
        std::string group = f.iommu_group.empty() ? "-" : f.iommu_group;
        if (!f.iommu_group.empty() && uio::group_members(hp, f.iommu_group).size() > 1) group += "*";
        fmt::print("{:<14} {:04x}:{:04x}  {:<17} {:<13} {:<6} {}\n", f.bdf, f.vendor, f.device,
                   f.driver.empty() ? "-" : f.driver, uio::to_string(itf), group, queues);
    }
    return 0;
}

static std::string named_function(const options& o) {
    if (!o.positional.empty() && o.values.count("-d")) return {};
    return o.positional.empty() ? o.get("-d") : o.positional.front();
}

int cmd_bind(const options& o) {
    if (geteuid() != 0) return fail("bind needs root (it writes PCI sysfs files)");
    if (!o.positional.empty() && o.values.count("-d")) return fail("name the function once (PCI or -d)", exit_usage);
    const uio::host_paths hp;
    uio::pci_function f;
    std::string err;
    if (!uio::select_function(hp, named_function(o), f, err)) return fail(err);
    uio::host_driver d = uio::default_driver(f);
    if (!parse_driver(o, d, err) && !err.empty()) return fail(err, exit_usage);
    const std::string before = f.driver;
    const char* want = uio::driver_name(d);
    // Moving between uio and vfio pulls the function from under a running vscsi-uio.
    if (uio::is_userspace_driver(before) && before != want && uio::function_lock::held_elsewhere(hp, f.bdf))
        return fail(f.bdf + " is in use by a running vscsi-uio; stop it first");
    if (!uio::bind_driver(hp, f, d, o.flags.count("--force") != 0, err)) return fail(err);
    const std::string node = d == uio::host_driver::uio ? "/dev/" + f.uio : "/dev/vfio/" + f.iommu_group;
    if (before == want)
        fmt::print("{}: already bound to {} ({})\n", f.bdf, want, node);
    else
        fmt::print("{}: bound to {} ({}){}\n", f.bdf, want, node, before.empty() ? "" : ", taken from " + before);
    return 0;
}

int cmd_unbind(const options& o) {
    if (geteuid() != 0) return fail("unbind needs root (it writes PCI sysfs files)");
    if (!o.positional.empty() && o.values.count("-d")) return fail("name the function once (PCI or -d)", exit_usage);
    const uio::host_paths hp;
    uio::pci_function f;
    std::string err, now;
    if (!uio::select_function(hp, named_function(o), f, err)) return fail(err);
    const std::string before = f.driver;
    if (uio::function_lock::held_elsewhere(hp, f.bdf))
        return fail(f.bdf + " is in use by a running vscsi-uio; stop it first");
    if (!uio::release_to_kernel(hp, f, now, err)) return fail(err);
    if (!uio::is_userspace_driver(before) && !before.empty())
        fmt::print("{}: not bound to {} or {} (bound to {}); nothing to do\n", f.bdf, uio::uio_driver,
                   uio::vfio_driver, before);
    else
        fmt::print("{}: released to the kernel; now {}\n", f.bdf, now.empty() ? "unbound" : "bound to " + now);
    return 0;
}

}  // namespace vscsi_uio
