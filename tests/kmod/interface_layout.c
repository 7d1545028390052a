/* The kmod interface's structs as a C compiler lays them out: the C++ test compares these
 * numbers with its own view, so the glue (C) and the protocol unit (C++) agree on every
 * field. Compiled with -std=gnu89 -Wall -Wextra -Werror, as strict as the oldest glue. */
#include <stddef.h>
#include "vscsi_kmod.h"

#define FIELD(s, f) offsetof(struct s, f), sizeof(((struct s *)0)->f)

const unsigned long vsk_c_layout[] = {
	sizeof(struct vsk_cmd_result),
	FIELD(vsk_cmd_result, residual), FIELD(vsk_cmd_result, sense_len),
	FIELD(vsk_cmd_result, response), FIELD(vsk_cmd_result, status),
	FIELD(vsk_cmd_result, host), FIELD(vsk_cmd_result, written),
	sizeof(struct vsk_event),
	FIELD(vsk_event, event), FIELD(vsk_event, reason), FIELD(vsk_event, lun),
	FIELD(vsk_event, target), FIELD(vsk_event, action), FIELD(vsk_event, missed),
	FIELD(vsk_event, lun_valid),
	sizeof(struct vsk_config),
	FIELD(vsk_config, num_queues), FIELD(vsk_config, seg_max), FIELD(vsk_config, max_sectors),
	FIELD(vsk_config, cmd_per_lun), FIELD(vsk_config, event_info_size),
	FIELD(vsk_config, sense_size), FIELD(vsk_config, cdb_size), FIELD(vsk_config, max_lun),
	FIELD(vsk_config, max_channel), FIELD(vsk_config, max_target),
	sizeof(struct vsk_host_limits),
	FIELD(vsk_host_limits, request_queues), FIELD(vsk_host_limits, can_queue),
	FIELD(vsk_host_limits, sg_tablesize), FIELD(vsk_host_limits, max_sectors),
	FIELD(vsk_host_limits, cmd_per_lun), FIELD(vsk_host_limits, max_id),
	FIELD(vsk_host_limits, max_lun), FIELD(vsk_host_limits, max_channel),
	FIELD(vsk_host_limits, max_cmd_len),
	sizeof(enum vsk_outcome), sizeof(enum vsk_event_action)
};
const unsigned long vsk_c_layout_count = sizeof(vsk_c_layout) / sizeof(vsk_c_layout[0]);
