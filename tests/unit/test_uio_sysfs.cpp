// The userspace backends' sysfs logic against a fake /sys and /proc tree: discovery, address
// parsing, interface detection, IOMMU groups, the in-use and IOMMU checks, and what binding to
// uio_pci_generic or vfio-pci writes (and, when it must refuse, that it writes nothing).
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "function_lock.hpp"
#include "pci_function.hpp"
#include "sysfs.hpp"

namespace fs = std::filesystem;
using namespace vscsi::uio;

namespace {

// A scratch tree shaped like the kernel's: sys/bus/pci/devices/<bdf>/..., sys/block, proc.
struct fake_host {
    fs::path root;
    host_paths hp;

    fake_host() {
        char tmpl[] = "/tmp/vscsi-sysfs-XXXXXX";
        REQUIRE(mkdtemp(tmpl));
        root = tmpl;
        hp.sys = (root / "sys").string();
        hp.proc = (root / "proc").string();
        hp.dev = (root / "dev").string();
        for (const char* d : {"sys/bus/pci/devices", "sys/bus/pci/drivers/virtio-pci", "sys/bus/pci/drivers/uio_pci_generic",
                              "sys/devices/pci0000:00", "sys/block", "proc/self", "dev"})
            fs::create_directories(root / d);
        write("sys/bus/pci/drivers_probe", "");
        write("proc/self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n");
        write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
    }
    ~fake_host() { fs::remove_all(root); }

    void write(const std::string& rel, const std::string& text) {
        fs::create_directories((root / rel).parent_path());
        std::ofstream(root / rel) << text;
    }
    std::string read(const std::string& rel) {
        std::string s;
        read_file((root / rel).string(), s);
        return s;
    }
    // A PCI function with the given IDs, config space and driver.
    void function(const std::string& bdf, const std::string& vendor, const std::string& device,
                  const std::string& driver = "", const std::string& config = std::string(256, '\0')) {
        const std::string dir = "sys/devices/pci0000:00/" + bdf;
        write(dir + "/vendor", vendor + "\n");
        write(dir + "/device", device + "\n");
        write(dir + "/revision", "0x01\n");
        write(dir + "/driver_override", "(null)\n");
        write(dir + "/config", config);
        write(dir + "/resource", "0x000000000000c000 0x000000000000c03f 0x0000000000040101\n"
                                 "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
                                 "0x00000000febf8000 0x00000000febfbfff 0x000000000014220c\n");
        fs::create_symlink("../../../devices/pci0000:00/" + bdf, root / "sys/bus/pci/devices" / bdf);
        if (!driver.empty()) {
            fs::create_directories(root / "sys/bus/pci/drivers" / driver);
            write("sys/bus/pci/drivers/" + driver + "/unbind", "");
            fs::create_symlink("../../../bus/pci/drivers/" + driver, root / dir / "driver");
        }
        if (driver == "uio_pci_generic") fs::create_directories(root / dir / "uio/uio3");
    }
    // A disk below a function: sys/block/<name> -> its device directory.
    void disk(const std::string& bdf, const std::string& name, const std::string& devno) {
        const std::string dir = "sys/devices/pci0000:00/" + bdf + "/virtio0/host0/target0:0:0/0:0:0:0/block/" + name;
        write(dir + "/dev", devno + "\n");
        fs::create_directories(root / dir / "holders");
        fs::create_symlink("../devices/pci0000:00/" + bdf + "/virtio0/host0/target0:0:0/0:0:0:0/block/" + name,
                           root / "sys/block" / name);
    }
    // Put a function in an IOMMU group: its iommu_group link and the group's devices list.
    void group(const std::string& bdf, const std::string& n) {
        fs::create_directories(root / "sys/kernel/iommu_groups" / n / "devices");
        fs::create_symlink("../../../kernel/iommu_groups/" + n, root / "sys/devices/pci0000:00" / bdf / "iommu_group");
        fs::create_symlink("../../../../devices/pci0000:00/" + bdf, root / "sys/kernel/iommu_groups" / n / "devices" / bdf);
    }
    void partition(const std::string& bdf, const std::string& disk_name, const std::string& name, const std::string& devno) {
        const std::string dir =
            "sys/devices/pci0000:00/" + bdf + "/virtio0/host0/target0:0:0/0:0:0:0/block/" + disk_name + "/" + name;
        write(dir + "/dev", devno + "\n");
        write(dir + "/partition", "1\n");
        fs::create_directories(root / dir / "holders");
    }
};

// Config space with a capability list: one vendor capability of the given cfg_type.
std::string config_with_vendor_cap(uint8_t cfg_type) {
    std::string c(256, '\0');
    c[0x06] = 0x10;  // status: capability list
    c[0x34] = 0x40;
    c[0x40] = 0x09;  // vendor-specific
    c[0x41] = 0x00;  // end of list
    c[0x42] = 16;
    c[0x43] = char(cfg_type);
    c[0x44] = 4;     // BAR 4
    return c;
}

}  // namespace

TEST_CASE("PCI addresses are parsed strictly", "[uio][sysfs]") {
    CHECK(canonical_bdf("0000:00:04.0") == "0000:00:04.0");
    CHECK(canonical_bdf("00:04.0") == "0000:00:04.0");
    CHECK(canonical_bdf("1:2:3.4") == "0001:02:03.4");
    CHECK(canonical_bdf("0000:AB:1f.7") == "0000:ab:1f.7");
    for (const char* bad : {"", "xyz", "00:04", "00:04.8", "00:20.0", "0000:00:04.0x", "0000:100:04.0", "-0:04.0",
                            "00:04.0 ", "0x0:04.0"})
        CHECK(canonical_bdf(bad).empty());
}

TEST_CASE("discovery finds virtio-scsi functions of either ID, and only those", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:05.0", "0x1af4", "0x1048", "virtio-pci");
    h.function("0000:00:03.0", "0x1af4", "0x1004");
    h.function("0000:00:04.0", "0x1af4", "0x1001", "virtio-pci");  // virtio-blk
    h.function("0000:00:06.0", "0x8086", "0x1004");                 // wrong vendor
    h.function("0000:00:07.0", "0x1af4", "0x1004", "uio_pci_generic");
    const auto all = find_virtio_scsi(h.hp);
    REQUIRE(all.size() == 3);
    CHECK(all[0].bdf == "0000:00:03.0");
    CHECK(all[0].driver.empty());
    CHECK(all[1].bdf == "0000:00:05.0");
    CHECK(all[1].device == 0x1048);
    CHECK(all[1].driver == "virtio-pci");
    CHECK(all[2].driver == "uio_pci_generic");
    CHECK(all[2].uio == "uio3");

    pci_function f;
    std::string err;
    CHECK(!select_function(h.hp, "", f, err));
    CHECK(err.find("3 virtio-scsi functions") != std::string::npos);
    CHECK(select_function(h.hp, "00:05.0", f, err));
    CHECK(f.bdf == "0000:00:05.0");
    CHECK(!select_function(h.hp, "00:04.0", f, err));
    CHECK(err == "0000:00:04.0 is not a virtio-scsi function (it is 1af4:1001)");
    CHECK(!select_function(h.hp, "00:09.0", f, err));
    CHECK(err == "no PCI function at 0000:00:09.0");
    CHECK(!select_function(h.hp, "bogus", f, err));
    CHECK(err.find("not a PCI address") != std::string::npos);
}

TEST_CASE("the only function is chosen when none is named; none at all is an error", "[uio][sysfs]") {
    fake_host h;
    pci_function f;
    std::string err;
    CHECK(!select_function(h.hp, "", f, err));
    CHECK(err.find("no virtio-scsi PCI function") != std::string::npos);
    h.function("0000:00:02.0", "0x1af4", "0x1004");
    CHECK(select_function(h.hp, "", f, err));
    CHECK(f.bdf == "0000:00:02.0");
}

TEST_CASE("interfaces: modern ID, transitional with capabilities, legacy without", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1048");
    h.function("0000:00:03.0", "0x1af4", "0x1004", "", config_with_vendor_cap(1));
    h.function("0000:00:04.0", "0x1af4", "0x1004");
    h.function("0000:00:05.0", "0x1af4", "0x1004", "", config_with_vendor_cap(4));  // no common cfg
    h.function("0000:00:06.0", "0x1af4", "0x1004", "", std::string(64, '\0'));        // non-root view
    const auto all = find_virtio_scsi(h.hp);
    REQUIRE(all.size() == 5);
    CHECK(probe_interfaces(h.hp, all[0]) == interfaces::modern);
    CHECK(probe_interfaces(h.hp, all[1]) == interfaces::transitional);
    CHECK(probe_interfaces(h.hp, all[2]) == interfaces::legacy);
    CHECK(probe_interfaces(h.hp, all[3]) == interfaces::legacy);
    CHECK(probe_interfaces(h.hp, all[4]) == interfaces::unknown);
}

TEST_CASE("BAR resources are read from sysfs", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004");
    bar_resource b[6];
    REQUIRE(read_bars(h.hp, "0000:00:02.0", b));
    CHECK(b[0].io());
    CHECK(b[0].length() == 64);
    CHECK(!b[1].present());
    CHECK(b[2].mem());
    CHECK(b[2].length() == 0x4000);
    CHECK(!b[3].present());
}

TEST_CASE("disks in use: mounted disk or partition, swap, holders", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004", "virtio-pci");
    h.function("0000:00:03.0", "0x1af4", "0x1004", "virtio-pci");
    h.disk("0000:00:02.0", "sdb", "8:16");
    h.partition("0000:00:02.0", "sdb", "sdb1", "8:17");
    h.disk("0000:00:03.0", "sdc", "8:32");
    CHECK(disks_in_use(h.hp, "0000:00:02.0").empty());
    h.write("proc/self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n40 1 8:17 / /data rw - ext4 /dev/sdb1 rw\n");
    CHECK(disks_in_use(h.hp, "0000:00:02.0") == "disk sdb1 is mounted on /data");
    CHECK(disks_in_use(h.hp, "0000:00:03.0").empty());  // another function's disk is not ours
    h.write("proc/self/mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n");
    h.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/dev/sdc                                partition\t1\t0\t-2\n");
    CHECK(disks_in_use(h.hp, "0000:00:03.0") == "disk sdc is in use as swap");
    fs::create_directories(h.root / "sys/block/sdb/holders/dm-0");
    CHECK(disks_in_use(h.hp, "0000:00:02.0") == "disk sdb is held by dm-0");
}

TEST_CASE("an IOMMU translating DMA is refused with a remedy; identity or none is fine", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004");
    CHECK(iommu_problem(h.hp, "0000:00:02.0").empty());
    h.write("sys/kernel/iommu_groups/7/type", "identity\n");
    fs::create_symlink("../../../kernel/iommu_groups/7", h.root / "sys/devices/pci0000:00/0000:00:02.0/iommu_group");
    CHECK(iommu_problem(h.hp, "0000:00:02.0").empty());
    h.write("sys/kernel/iommu_groups/7/type", "DMA-FQ\n");
    const std::string why = iommu_problem(h.hp, "0000:00:02.0");
    CHECK(why.find("IOMMU translates DMA") != std::string::npos);
    CHECK(why.find("DMA-FQ") != std::string::npos);
    CHECK(why.find("iommu=pt") != std::string::npos);
}

TEST_CASE("binding refuses another driver's function without --force, and mounted disks always", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004", "virtio-pci");
    h.disk("0000:00:02.0", "sda", "8:0");
    pci_function f;
    std::string err;
    REQUIRE(select_function(h.hp, "", f, err));
    CHECK(!bind_driver(h.hp, f, host_driver::uio, false, err));
    CHECK(err == "0000:00:02.0 is bound to virtio-pci; add --force to take it from that driver");
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "(null)\n");
    CHECK(h.read("sys/bus/pci/drivers/virtio-pci/unbind").empty());

    h.write("proc/self/mountinfo", "40 1 8:0 / /srv rw - ext4 /dev/sda rw\n");
    CHECK(!bind_driver(h.hp, f, host_driver::uio, true, err));
    CHECK(err.find("disk sda is mounted on /srv") != std::string::npos);
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "(null)\n");
    CHECK(h.read("sys/bus/pci/drivers/virtio-pci/unbind").empty());
    CHECK(h.read("sys/bus/pci/drivers_probe").empty());
}

TEST_CASE("binding with --force: override, unbind, probe, in that order of files", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004", "virtio-pci");
    pci_function f;
    std::string err;
    REQUIRE(select_function(h.hp, "", f, err));
    // The fake kernel does not bind anything, so this ends in "did not take the function",
    // after writing exactly what a real kernel needs.
    CHECK(!bind_driver(h.hp, f, host_driver::uio, true, err));
    CHECK(err.find("uio_pci_generic did not take the function") != std::string::npos);
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "uio_pci_generic\n");
    CHECK(h.read("sys/bus/pci/drivers/virtio-pci/unbind") == "0000:00:02.0");
    CHECK(h.read("sys/bus/pci/drivers_probe") == "0000:00:02.0");
}

TEST_CASE("a function already bound to uio_pci_generic needs nothing; release clears the override", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004", "uio_pci_generic");
    pci_function f;
    std::string err, now;
    REQUIRE(select_function(h.hp, "", f, err));
    CHECK(bind_driver(h.hp, f, host_driver::uio, false, err));
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "(null)\n");
    CHECK(release_to_kernel(h.hp, f, now, err));
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "\n");
    CHECK(h.read("sys/bus/pci/drivers/uio_pci_generic/unbind") == "0000:00:02.0");
    CHECK(h.read("sys/bus/pci/drivers_probe") == "0000:00:02.0");
}

TEST_CASE("one driver per function: the lock refuses a second one until released", "[uio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1004", "uio_pci_generic");
    h.function("0000:00:03.0", "0x1af4", "0x1004", "uio_pci_generic");
    std::string err;
    CHECK(!function_lock::held_elsewhere(h.hp, "0000:00:02.0"));
    {
        function_lock first;
        REQUIRE(first.acquire(h.hp, "0000:00:02.0", err));
        CHECK(function_lock::held_elsewhere(h.hp, "0000:00:02.0"));
        CHECK(!function_lock::held_elsewhere(h.hp, "0000:00:03.0"));  // another function is free
        function_lock second;
        CHECK(!second.acquire(h.hp, "0000:00:02.0", err));
        CHECK(err == "0000:00:02.0 is in use by another vscsi-uio");
    }
    CHECK(!function_lock::held_elsewhere(h.hp, "0000:00:02.0"));
}

TEST_CASE("vfio: the default where a function has an IOMMU group, uio where it has none", "[uio][vfio][sysfs]") {
    fake_host h;
    h.function("0000:00:02.0", "0x1af4", "0x1048");
    h.function("0000:00:03.0", "0x1af4", "0x1048");
    h.group("0000:00:03.0", "7");
    const auto all = find_virtio_scsi(h.hp);
    REQUIRE(all.size() == 2);
    CHECK(all[0].iommu_group.empty());
    CHECK(default_driver(all[0]) == host_driver::uio);
    CHECK(all[1].iommu_group == "7");
    CHECK(default_driver(all[1]) == host_driver::vfio);
    CHECK(group_members(h.hp, "7") == std::vector<std::string>{"0000:00:03.0"});
    CHECK(is_userspace_driver("vfio-pci"));
    CHECK(is_userspace_driver("uio_pci_generic"));
    CHECK(!is_userspace_driver("virtio-pci"));
    CHECK(!is_userspace_driver(""));
}

TEST_CASE("vfio: binding needs an IOMMU group of the function's own, and then writes what the kernel needs",
          "[uio][vfio][sysfs]") {
    fake_host h;
    fs::create_directories(h.root / "sys/bus/pci/drivers/vfio-pci");
    h.function("0000:00:02.0", "0x1af4", "0x1048");                 // no IOMMU
    h.function("0000:00:03.0", "0x1af4", "0x1048");                 // shares group 5 with a bridge
    h.function("0000:00:04.0", "0x8086", "0x244e", "pcieport");
    h.group("0000:00:03.0", "5");
    h.group("0000:00:04.0", "5");
    h.function("0000:00:05.0", "0x1af4", "0x1048", "virtio-pci");   // a group of its own
    h.group("0000:00:05.0", "6");
    pci_function f;
    std::string err;

    REQUIRE(select_function(h.hp, "00:02.0", f, err));
    CHECK(!bind_driver(h.hp, f, host_driver::vfio, false, err));
    CHECK(err.find("no IOMMU: 0000:00:02.0 is in no IOMMU group") == 0);
    CHECK(h.read("sys/bus/pci/devices/0000:00:02.0/driver_override") == "(null)\n");

    REQUIRE(select_function(h.hp, "00:03.0", f, err));
    CHECK(!bind_driver(h.hp, f, host_driver::vfio, true, err));
    CHECK(err.find("IOMMU group 5 of 0000:00:03.0 is shared with 0000:00:04.0 (pcieport)") == 0);
    CHECK(h.read("sys/bus/pci/devices/0000:00:03.0/driver_override") == "(null)\n");
    CHECK(h.read("sys/bus/pci/drivers_probe").empty());

    REQUIRE(select_function(h.hp, "00:05.0", f, err));
    CHECK(!bind_driver(h.hp, f, host_driver::vfio, false, err));  // a kernel driver has it
    CHECK(err == "0000:00:05.0 is bound to virtio-pci; add --force to take it from that driver");
    CHECK(!bind_driver(h.hp, f, host_driver::vfio, true, err));   // the fake kernel binds nothing
    CHECK(err.find("vfio-pci did not take the function") != std::string::npos);
    CHECK(h.read("sys/bus/pci/devices/0000:00:05.0/driver_override") == "vfio-pci\n");
    CHECK(h.read("sys/bus/pci/drivers/virtio-pci/unbind") == "0000:00:05.0");
    CHECK(h.read("sys/bus/pci/drivers_probe") == "0000:00:05.0");
}

TEST_CASE("vfio: a function on vfio-pci needs nothing; it moves to uio without --force, and goes back to the kernel",
          "[uio][vfio][sysfs]") {
    fake_host h;
    h.function("0000:00:05.0", "0x1af4", "0x1048", "vfio-pci");
    h.group("0000:00:05.0", "6");
    pci_function f;
    std::string err, now;
    REQUIRE(select_function(h.hp, "", f, err));
    CHECK(bind_driver(h.hp, f, host_driver::vfio, false, err));   // already there: nothing written
    CHECK(h.read("sys/bus/pci/drivers_probe").empty());
    CHECK(!bind_driver(h.hp, f, host_driver::uio, false, err));   // no --force needed to move ...
    CHECK(err.find("uio_pci_generic did not take the function") != std::string::npos);  // ... the fake kernel binds nothing
    CHECK(h.read("sys/bus/pci/devices/0000:00:05.0/driver_override") == "uio_pci_generic\n");
    CHECK(h.read("sys/bus/pci/drivers/vfio-pci/unbind") == "0000:00:05.0");
    h.write("sys/bus/pci/drivers/vfio-pci/unbind", "");
    CHECK(release_to_kernel(h.hp, f, now, err));
    CHECK(h.read("sys/bus/pci/devices/0000:00:05.0/driver_override") == "\n");
    CHECK(h.read("sys/bus/pci/drivers/vfio-pci/unbind") == "0000:00:05.0");
}
