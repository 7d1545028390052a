// vscsi-uio: drive a virtio-scsi PCI function from userspace through vfio-pci (behind an
// IOMMU) or uio_pci_generic (without one).
//
//   vscsi-uio list
//   vscsi-uio bind|unbind [PCI] [--driver uio|vfio] [--force]
//   vscsi-uio scan [-d PCI]
//   vscsi-uio inquiry|capacity -d PCI -t T -l L
//   vscsi-uio read  -d PCI -t T -l L --lba N --count C [-o FILE]
//   vscsi-uio write -d PCI -t T -l L --lba N --count C (-i FILE | --pattern SEED)
//   vscsi-uio verify -d PCI -t T -l L [--size BYTES] [--seed S]
//   vscsi-uio bench -d PCI -t T -l L --rw MODE --bs 4k --iodepth 32 --runtime 10 [--queues N] [--threads N]
//                   [--verify SEED] [--json]
//   vscsi-uio events -d PCI [--timeout S]
//   vscsi-uio reset -d PCI -t T -l L --type abort|lun|target|device
//   vscsi-uio iommu-check -d PCI -t T -l L      (vfio: a READ into an unmapped IOVA faults)
//
// Every device command also takes --irq (sleep on interrupts instead of polling), --hybrid
// (poll briefly, then sleep on the interrupt), --legacy / --modern (force a virtio-pci
// interface), --ring split|packed (force a virtqueue format; by default packed when the
// device offers it) and --driver uio|vfio (which one takes an unbound function). Errors are
// one line on stderr and a non-zero exit: 2 for a bad command line, 1 for everything else.
#include <signal.h>

#include <fmt/core.h>

#include <set>
#include <string>

#include "commands.hpp"
#include "options.hpp"
#include "session.hpp"

using namespace vscsi_uio;

namespace {

void on_signal(int) { g_stop = true; }

const char* const usage_text =
    "usage: vscsi-uio COMMAND [options]\n"
    "  list                                  virtio-scsi functions: address, driver, interface, IOMMU group, queues\n"
    "  bind|unbind [PCI] [--driver uio|vfio] [--force]\n"
    "                                        give a function to vfio-pci (where it has an IOMMU group)\n"
    "                                        or uio_pci_generic, or back to the kernel\n"
    "  scan [-d PCI]                         every target and LUN: identity, capacity, limits\n"
    "  inquiry|capacity -d PCI -t T -l L\n"
    "  read  -d PCI -t T -l L --lba N --count C [-o FILE|-]\n"
    "  write -d PCI -t T -l L --lba N --count C (-i FILE | --pattern SEED)\n"
    "  verify -d PCI -t T -l L [--size BYTES] [--seed S]\n"
    "  bench -d PCI -t T -l L --rw randread|randwrite|read|write|randrw --bs 4k --iodepth 32\n"
    "        --runtime 10 [--queues N] [--threads N] [--verify SEED] [--json]\n"
    "  events -d PCI [--timeout S]\n"
    "  reset -d PCI -t T -l L --type abort|lun|target|device\n"
    "  iommu-check -d PCI -t T -l L          diagnostic: a READ into an unmapped IOVA must fault, not land\n"
    "device commands also take --irq (interrupts instead of polling), --hybrid (poll briefly,\n"
    "then sleep on the interrupt), --legacy | --modern, --ring split|packed (packed when offered)\n"
    "and --driver uio|vfio (for an unbound function);\n"
    "-d may be left out when there is one virtio-scsi function, -t/-l default to the first LUN.\n";

struct command_entry {
    const char* name;
    int (*run)(const options&);
    option_spec spec;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        fmt::print(stderr, "{}", usage_text);
        return exit_usage;
    }
    const std::string cmd = argv[1];
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
        fmt::print("{}", usage_text);
        return 0;
    }
    const std::set<std::string> dev_flags = {"--irq", "--hybrid", "--legacy", "--modern"};
    auto with = [](std::set<std::string> a, const std::set<std::string>& b) {
        a.insert(b.begin(), b.end());
        return a;
    };
    const std::set<std::string> lun_values = {"-d", "-t", "-l", "--driver", "--ring"};
    const command_entry commands[] = {
        {"list", cmd_list, {{}, {}, 0}},
        {"bind", cmd_bind, {{"-d", "--driver"}, {"--force"}, 1}},
        {"unbind", cmd_unbind, {{"-d"}, {}, 1}},
        {"scan", cmd_scan, {{"-d", "--driver", "--ring"}, dev_flags, 0}},
        {"inquiry", cmd_inquiry, {lun_values, dev_flags, 0}},
        {"capacity", cmd_capacity, {lun_values, dev_flags, 0}},
        {"read", cmd_read, {with(lun_values, {"--lba", "--count", "-o"}), dev_flags, 0}},
        {"write", cmd_write, {with(lun_values, {"--lba", "--count", "-i", "--pattern"}), dev_flags, 0}},
        {"verify", cmd_verify, {with(lun_values, {"--size", "--seed"}), dev_flags, 0}},
        {"bench", cmd_bench,
         {with(lun_values, {"--rw", "--bs", "--iodepth", "--runtime", "--queues", "--threads", "--verify"}),
          with(dev_flags, {"--json"}), 0}},
        {"events", cmd_events, {{"-d", "--driver", "--timeout", "--ring"}, dev_flags, 0}},
        {"reset", cmd_reset, {with(lun_values, {"--type"}), dev_flags, 0}},
        {"iommu-check", cmd_iommu_check, {lun_values, dev_flags, 0}},
    };
    for (const command_entry& e : commands) {
        if (cmd != e.name) continue;
        options o;
        o.command = cmd;
        std::string err;
        vscsi::uio::host_driver driver;
        if (!parse_options(argc, argv, 2, e.spec, o, err) || !parse_device_args(o, err) ||
            (!parse_driver(o, driver, err) && !err.empty()))
            return fail(err, exit_usage);
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);
        // A closed pipe (read -o - | head) is an error to report, not a reason to die with
        // the device still running.
        signal(SIGPIPE, SIG_IGN);
        return e.run(o);
    }
    return fail("unknown command '" + cmd + "' (try 'vscsi-uio help')", exit_usage);
}

