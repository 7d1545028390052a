// Small helpers for the kernel's text interfaces (sysfs, procfs), with the roots as values so
// tests can point them at a fake tree.
#pragma once
#include <stdint.h>

#include <string>
#include <vector>

namespace vscsi::uio {

// Where the kernel's interfaces are. Tests build a fake tree and point these at it.
struct host_paths {
    std::string sys = "/sys";
    std::string proc = "/proc";
    std::string dev = "/dev";

    std::string pci_devices() const { return sys + "/bus/pci/devices"; }
    std::string pci_drivers() const { return sys + "/bus/pci/drivers"; }
    std::string pci_function(const std::string& bdf) const { return pci_devices() + "/" + bdf; }
};

// The whole file, or false (and a reason in `err`, errno text included).
bool read_file(const std::string& path, std::string& out, std::string* err = nullptr);
// The first line without its newline; empty if unreadable.
std::string read_line(const std::string& path);
// Write `text` to an existing sysfs attribute in one write(2), as sysfs wants.
bool write_file(const std::string& path, const std::string& text, std::string* err = nullptr);
// "0x1af4\n" -> 0x1af4; false if the file is missing or not a number.
bool read_number(const std::string& path, uint64_t& out);
// Names in a directory (not . and ..), sorted; empty if it cannot be read.
std::vector<std::string> list_dir(const std::string& path);
bool exists(const std::string& path);
// The last component of a symlink's target ("../../bus/pci/drivers/virtio-pci" ->
// "virtio-pci"); empty if it is not a symlink.
std::string link_name(const std::string& path);
// The fully resolved path, or empty.
std::string resolve(const std::string& path);

}  // namespace vscsi::uio
