#include "pci_function.hpp"

#include <ctype.h>
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <vscsi/pci.hpp>

extern char** environ;

namespace vscsi::uio {

const char* driver_name(host_driver d) { return d == host_driver::vfio ? vfio_driver : uio_driver; }

bool is_userspace_driver(const std::string& name) { return name == uio_driver || name == vfio_driver; }

const char* to_string(interfaces i) {
    switch (i) {
        case interfaces::transitional: return "transitional";
        case interfaces::modern: return "modern";
        case interfaces::legacy: return "legacy";
        case interfaces::unknown: return "unknown";
    }
    return "unknown";
}

std::string canonical_bdf(const std::string& text) {
    unsigned dom = 0, bus = 0, slot = 0, fn = 0;
    char tail = 0;
    int n = 0;
    // %n records how far the match got; a 5th conversion means trailing garbage.
    const bool with_domain = sscanf(text.c_str(), "%x:%x:%x.%x%n%c", &dom, &bus, &slot, &fn, &n, &tail) == 4 &&
                             size_t(n) == text.size();
    if (!with_domain) {
        dom = 0;
        n = 0;
        if (sscanf(text.c_str(), "%x:%x.%x%n%c", &bus, &slot, &fn, &n, &tail) != 3 || size_t(n) != text.size())
            return {};
    }
    for (char c : text)
        if (!isxdigit(uint8_t(c)) && c != ':' && c != '.') return {};
    if (dom > 0xffff || bus > 0xff || slot > 0x1f || fn > 7) return {};
    char buf[32];
    snprintf(buf, sizeof buf, "%04x:%02x:%02x.%x", dom, bus, slot, fn);
    return buf;
}

namespace {

bool load_function(const host_paths& hp, const std::string& bdf, pci_function& f) {
    const std::string dir = hp.pci_function(bdf);
    uint64_t v = 0, d = 0;
    if (!read_number(dir + "/vendor", v) || !read_number(dir + "/device", d)) return false;
    f = pci_function{};
    f.bdf = bdf;
    f.vendor = uint16_t(v);
    f.device = uint16_t(d);
    uint64_t x = 0;
    if (read_number(dir + "/subsystem_vendor", x)) f.subsystem_vendor = uint16_t(x);
    if (read_number(dir + "/subsystem_device", x)) f.subsystem_device = uint16_t(x);
    if (read_number(dir + "/revision", x)) f.revision = uint8_t(x);
    refresh_binding(hp, f);
    return true;
}

// PCI config space bytes as a Bus for pci.hpp's capability walker.
struct config_bytes {
    const std::string& b;
    uint8_t config_read8(uint32_t off) const { return off < b.size() ? uint8_t(b[off]) : 0xff; }
    uint16_t config_read16(uint32_t off) const { return uint16_t(config_read8(off) | config_read8(off + 1) << 8); }
};

// Run a program and wait for it; true if it exited 0.
bool run_program(const char* const argv[]) {
    pid_t pid;
    if (posix_spawnp(&pid, argv[0], nullptr, nullptr, const_cast<char* const*>(argv), environ) != 0) return false;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return false;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

void sleep_ms(unsigned ms) {
    timespec ts{0, long(ms) * 1000000L};
    nanosleep(&ts, nullptr);
}

// sysfs block devices (disks and partitions) whose device lies below the function.
struct block_node {
    std::string name;    // sdb, sdb1
    std::string dev;     // "8:17"
    std::string sysdir;  // its sysfs directory
};

std::vector<block_node> block_nodes_of(const host_paths& hp, const std::string& bdf) {
    std::vector<block_node> out;
    const std::string needle = "/" + bdf + "/";
    for (const std::string& disk : list_dir(hp.sys + "/block")) {
        const std::string link = hp.sys + "/block/" + disk;
        const std::string real = resolve(link);
        if (real.find(needle) == std::string::npos) continue;
        out.push_back({disk, read_line(link + "/dev"), link});
        for (const std::string& part : list_dir(link)) {
            if (!exists(link + "/" + part + "/partition")) continue;
            out.push_back({part, read_line(link + "/" + part + "/dev"), link + "/" + part});
        }
    }
    return out;
}

}  // namespace

void refresh_binding(const host_paths& hp, pci_function& f) {
    const std::string dir = hp.pci_function(f.bdf);
    f.driver = link_name(dir + "/driver");
    f.iommu_group = iommu_group(hp, f.bdf);
    f.uio.clear();
    if (f.driver == uio_driver) {
        const std::vector<std::string> u = list_dir(dir + "/uio");
        if (!u.empty()) f.uio = u.front();
    }
}

std::string iommu_group(const host_paths& hp, const std::string& bdf) {
    return link_name(hp.pci_function(bdf) + "/iommu_group");
}

std::vector<std::string> group_members(const host_paths& hp, const std::string& group) {
    return list_dir(hp.sys + "/kernel/iommu_groups/" + group + "/devices");
}

host_driver default_driver(const pci_function& f) {
    return f.iommu_group.empty() ? host_driver::uio : host_driver::vfio;
}

std::vector<pci_function> find_virtio_scsi(const host_paths& hp) {
    std::vector<pci_function> out;
    for (const std::string& name : list_dir(hp.pci_devices())) {
        pci_function f;
        if (!load_function(hp, name, f)) continue;
        if (!is_virtio_scsi(f.vendor, f.device)) continue;
        out.push_back(f);
    }
    return out;
}

bool select_function(const host_paths& hp, const std::string& want, pci_function& out, std::string& err) {
    if (!want.empty()) {
        const std::string bdf = canonical_bdf(want);
        if (bdf.empty()) {
            err = "'" + want + "' is not a PCI address (expected e.g. 0000:00:04.0)";
            return false;
        }
        pci_function f;
        if (!load_function(hp, bdf, f)) {
            err = "no PCI function at " + bdf;
            return false;
        }
        if (!is_virtio_scsi(f.vendor, f.device)) {
            char id[16];
            snprintf(id, sizeof id, "%04x:%04x", f.vendor, f.device);
            err = bdf + " is not a virtio-scsi function (it is " + id + ")";
            return false;
        }
        out = f;
        return true;
    }
    const std::vector<pci_function> all = find_virtio_scsi(hp);
    if (all.empty()) {
        err = "no virtio-scsi PCI function (1af4:1004 or 1af4:1048) found";
        return false;
    }
    if (all.size() > 1) {
        err = std::to_string(all.size()) + " virtio-scsi functions (" + all[0].bdf + ", " + all[1].bdf +
              (all.size() > 2 ? ", ..." : "") + "): choose one with -d";
        return false;
    }
    out = all.front();
    return true;
}

interfaces probe_interfaces(const host_paths& hp, const pci_function& f) {
    if (f.device == pci_device_scsi_modern) return interfaces::modern;
    if (f.device != pci_device_scsi_transitional) return interfaces::unknown;
    std::string cfg;
    if (!read_file(hp.pci_function(f.bdf) + "/config", cfg) || cfg.size() < 64) return interfaces::unknown;
    if (cfg.size() < 256) return interfaces::unknown;  // capabilities are past 64 bytes: root only
    config_bytes cb{cfg};
    bool common = false;
    walk_capabilities(cb, [&](uint32_t at, uint8_t id) {
        if (id == pci_cfg::cap_id_vendor && cb.config_read8(at + modern_cap::cfg_type) == modern_cap::common_cfg)
            common = true;
        return !common;
    });
    return common ? interfaces::transitional : interfaces::legacy;
}

std::string disks_in_use(const host_paths& hp, const std::string& bdf) {
    const std::vector<block_node> nodes = block_nodes_of(hp, bdf);
    if (nodes.empty()) return {};
    std::string mountinfo;
    read_file(hp.proc + "/self/mountinfo", mountinfo);
    std::string swaps;
    read_file(hp.proc + "/swaps", swaps);
    for (const block_node& n : nodes) {
        // mountinfo: "id parent major:minor root mountpoint ..."
        size_t at = 0;
        while (at < mountinfo.size()) {
            size_t eol = mountinfo.find('\n', at);
            if (eol == std::string::npos) eol = mountinfo.size();
            const std::string line = mountinfo.substr(at, eol - at);
            at = eol + 1;
            char devno[32], mnt[512];
            if (sscanf(line.c_str(), "%*s %*s %31s %*s %511s", devno, mnt) == 2 && !n.dev.empty() && n.dev == devno)
                return "disk " + n.name + " is mounted on " + mnt;
        }
        if (swaps.find("/dev/" + n.name + " ") != std::string::npos ||
            swaps.find("/dev/" + n.name + "\t") != std::string::npos)
            return "disk " + n.name + " is in use as swap";
        const std::vector<std::string> holders = list_dir(n.sysdir + "/holders");
        if (!holders.empty()) return "disk " + n.name + " is held by " + holders.front();
    }
    return {};
}

std::string iommu_problem(const host_paths& hp, const std::string& bdf) {
    const std::string group = hp.pci_function(bdf) + "/iommu_group";
    if (!exists(group)) return {};  // no IOMMU in the way: bus address == physical address
    const std::string type = read_line(group + "/type");
    if (type == "identity") return {};
    return "an IOMMU translates DMA for " + bdf + (type.empty() ? "" : " (domain type " + type + ")") +
           ", so physical addresses would not reach memory: boot with iommu=pt (or intel_iommu=off / "
           "amd_iommu=off), or set /sys/kernel/iommu_groups/<group>/type to identity";
}

namespace {

// Why vfio cannot take the function as its group stands, or empty.
std::string vfio_group_problem(const host_paths& hp, const pci_function& f) {
    if (f.iommu_group.empty())
        return "no IOMMU: " + f.bdf + " is in no IOMMU group, so vfio cannot confine its DMA (boot with "
               "intel_iommu=on or amd_iommu=on; a QEMU guest also needs -device intel-iommu); use --driver uio";
    std::string others;
    for (const std::string& m : group_members(hp, f.iommu_group)) {
        if (m == f.bdf) continue;
        const std::string drv = link_name(hp.pci_function(m) + "/driver");
        others += (others.empty() ? "" : ", ") + m + (drv.empty() ? "" : " (" + drv + ")");
    }
    if (others.empty()) return {};
    return "IOMMU group " + f.iommu_group + " of " + f.bdf + " is shared with " + others +
           ": vfio takes a whole group, so " + f.bdf + " needs a group of its own (another slot, or an "
           "IOMMU that isolates it); refusing to take it";
}

// Has the driver finished binding: uio_pci_generic made the uio node, vfio-pci the group file.
bool bound_and_ready(const host_paths& hp, const pci_function& f, host_driver d) {
    if (f.driver != driver_name(d)) return false;
    if (d == host_driver::uio) return !f.uio.empty() && exists(hp.dev + "/" + f.uio);
    return !f.iommu_group.empty() && exists(hp.dev + "/vfio/" + f.iommu_group);
}

}  // namespace

bool bind_driver(const host_paths& hp, pci_function& f, host_driver d, bool force, std::string& err) {
    refresh_binding(hp, f);
    const char* const want = driver_name(d);
    if (f.driver == want) return true;
    const std::string busy = disks_in_use(hp, f.bdf);
    if (!busy.empty()) {
        err = f.bdf + ": " + busy + "; refusing to take the function from the kernel";
        return false;
    }
    if (!f.driver.empty() && !is_userspace_driver(f.driver) && !force) {
        err = f.bdf + " is bound to " + f.driver + "; add --force to take it from that driver";
        return false;
    }
    if (d == host_driver::vfio) {
        const std::string why = vfio_group_problem(hp, f);
        if (!why.empty()) {
            err = why;
            return false;
        }
    }
    const std::string drv_dir = hp.pci_drivers() + "/" + want;
    if (!exists(drv_dir) && hp.sys == "/sys") {
        const char* const argv[] = {"modprobe", want, nullptr};
        run_program(argv);
    }
    if (!exists(drv_dir)) {
        err = std::string(want) + " is not available (modprobe " + want + " failed)";
        return false;
    }
    const std::string dir = hp.pci_function(f.bdf);
    std::string why;
    // driver_override makes the next probe pick our driver for this function only (new_id
    // would claim every function with this ID).
    if (!write_file(dir + "/driver_override", std::string(want) + "\n", &why)) {
        err = why;
        return false;
    }
    if (!f.driver.empty() && !write_file(dir + "/driver/unbind", f.bdf, &why)) {
        err = why;
        return false;
    }
    if (!write_file(hp.sys + "/bus/pci/drivers_probe", f.bdf, &why)) {
        err = why;
        return false;
    }
    for (int i = 0; i < 100; ++i) {
        refresh_binding(hp, f);
        if (bound_and_ready(hp, f, d)) return true;
        sleep_ms(10);
    }
    err = f.bdf + ": " + want + " did not take the function" +
          (f.driver.empty() ? std::string() : " (bound to " + f.driver + ")") + "; see dmesg";
    return false;
}

bool release_to_kernel(const host_paths& hp, pci_function& f, std::string& now_bound, std::string& err) {
    refresh_binding(hp, f);
    const std::string dir = hp.pci_function(f.bdf);
    std::string why;
    if (!f.driver.empty() && !is_userspace_driver(f.driver)) {
        now_bound = f.driver;
        return true;  // already the kernel's
    }
    // An empty line clears the override, so the kernel's own driver may match again.
    if (exists(dir + "/driver_override") && !write_file(dir + "/driver_override", "\n", &why)) {
        err = why;
        return false;
    }
    if (!f.driver.empty() && !write_file(dir + "/driver/unbind", f.bdf, &why)) {
        err = why;
        return false;
    }
    if (!write_file(hp.sys + "/bus/pci/drivers_probe", f.bdf, &why)) {
        err = why;
        return false;
    }
    refresh_binding(hp, f);
    now_bound = f.driver;
    return true;
}

bool read_bars(const host_paths& hp, const std::string& bdf, bar_resource out[6]) {
    std::string text;
    if (!read_file(hp.pci_function(bdf) + "/resource", text)) return false;
    size_t at = 0;
    for (int i = 0; i < 6; ++i) {
        out[i] = bar_resource{};
        const size_t eol = text.find('\n', at);
        if (eol == std::string::npos) return i > 0;
        unsigned long long s = 0, e = 0, fl = 0;
        if (sscanf(text.c_str() + at, "%llx %llx %llx", &s, &e, &fl) == 3) out[i] = bar_resource{s, e, fl};
        at = eol + 1;
    }
    return true;
}

}  // namespace vscsi::uio
