// The vscsi-uio commands; each returns the process exit code.
#pragma once
#include "options.hpp"

namespace vscsi_uio {

int cmd_list(const options& o);
int cmd_bind(const options& o);
int cmd_unbind(const options& o);
int cmd_scan(const options& o);
int cmd_inquiry(const options& o);
int cmd_capacity(const options& o);
int cmd_read(const options& o);
int cmd_write(const options& o);
int cmd_verify(const options& o);
int cmd_bench(const options& o);
int cmd_events(const options& o);
int cmd_reset(const options& o);
int cmd_iommu_check(const options& o);

}  // namespace vscsi_uio
