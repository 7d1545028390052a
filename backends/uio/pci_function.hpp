// virtio-scsi PCI functions as sysfs shows them: discovery, identity, the driver bound, the
// IOMMU group, binding to a userspace driver (uio_pci_generic or vfio-pci) and giving the
// function back to the kernel, and the checks that must pass before a userspace driver may
// take a function (no mounted disks; for uio no IOMMU translating its DMA, for vfio an IOMMU
// group of its own).
#pragma once
#include <stdint.h>

#include <string>
#include <vector>

#include "sysfs.hpp"

namespace vscsi::uio {

inline constexpr const char* uio_driver = "uio_pci_generic";
inline constexpr const char* vfio_driver = "vfio-pci";

// The kernel drivers that hand a function to a userspace driver.
enum class host_driver : uint8_t { uio, vfio };
const char* driver_name(host_driver d);
// uio_pci_generic or vfio-pci: the function is (or may be) driven by vscsi-uio.
bool is_userspace_driver(const std::string& name);

struct pci_function {
    std::string bdf;                // canonical "0000:00:04.0"
    uint16_t vendor = 0;
    uint16_t device = 0;
    uint16_t subsystem_vendor = 0;
    uint16_t subsystem_device = 0;
    uint8_t revision = 0;
    std::string driver;             // the bound driver's name, empty if none
    std::string uio;                // "uio0" while bound to uio_pci_generic
    std::string iommu_group;        // "7"; empty without an IOMMU
};

// Which virtio-pci interfaces a function offers, from its ID and capabilities.
enum class interfaces : uint8_t { transitional, modern, legacy, unknown };
const char* to_string(interfaces i);

// "00:04.0" or "0000:00:04.0" -> "0000:00:04.0"; empty if it is not a PCI address.
std::string canonical_bdf(const std::string& text);

// Every virtio-scsi function (1af4:1004 or 1af4:1048, any revision), sorted by address.
std::vector<pci_function> find_virtio_scsi(const host_paths& hp);

// The function named by `want`, or, when `want` is empty, the only one there is. On failure
// `err` is a one-line reason ("no virtio-scsi function at ...", "2 virtio-scsi functions:
// choose one with -d").
bool select_function(const host_paths& hp, const std::string& want, pci_function& out, std::string& err);

// Re-read the bound driver, uio node and IOMMU group.
void refresh_binding(const host_paths& hp, pci_function& f);

// From PCI config space (sysfs `config`; capabilities need root to read).
interfaces probe_interfaces(const host_paths& hp, const pci_function& f);

// Why the function's disks may not be taken from the kernel ("disk sdb1 is mounted on
// /mnt"), or empty. Looks at mounts, swap and holders (device-mapper, md) of every block
// device below the function.
std::string disks_in_use(const host_paths& hp, const std::string& bdf);

// Why DMA to physical addresses would not reach memory (an IOMMU translating for this
// function), with the remedy; empty if DMA is direct.
std::string iommu_problem(const host_paths& hp, const std::string& bdf);

// The IOMMU group of a PCI function ("7"), empty if it has none (no IOMMU).
std::string iommu_group(const host_paths& hp, const std::string& bdf);
// Every function in an IOMMU group, sorted.
std::vector<std::string> group_members(const host_paths& hp, const std::string& group);

// Which userspace driver takes a function nobody named one for: vfio-pci when the function
// has an IOMMU group (the IOMMU then confines its DMA), uio_pci_generic otherwise.
host_driver default_driver(const pci_function& f);

// Bind to uio_pci_generic or vfio-pci through driver_override. A function bound to a kernel
// driver is taken only with `force`; one whose disks are in use never, and for vfio one whose
// IOMMU group holds other functions never (vfio takes whole groups). A function on the other
// userspace driver moves without `force`. Loads the driver if needed.
bool bind_driver(const host_paths& hp, pci_function& f, host_driver d, bool force, std::string& err);

// The opposite: clear driver_override, unbind from the userspace driver and let the kernel
// probe the function again (virtio-pci takes it if loaded). `now_bound` names the new driver.
bool release_to_kernel(const host_paths& hp, pci_function& f, std::string& now_bound, std::string& err);

// One line of sysfs `resource`.
struct bar_resource {
    uint64_t start = 0;
    uint64_t end = 0;
    uint64_t flags = 0;
    static constexpr uint64_t flag_io = 0x100;    // IORESOURCE_IO
    static constexpr uint64_t flag_mem = 0x200;   // IORESOURCE_MEM
    bool present() const { return end > start && (flags & (flag_io | flag_mem)); }
    bool io() const { return present() && (flags & flag_io); }
    bool mem() const { return present() && (flags & flag_mem); }
    uint64_t length() const { return present() ? end - start + 1 : 0; }
};
bool read_bars(const host_paths& hp, const std::string& bdf, bar_resource out[6]);

}  // namespace vscsi::uio
