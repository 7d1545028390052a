// Device bring-up over a transport (checklist E): reset, status bits in order, feature
// negotiation, FEATURES_OK and its re-check, DRIVER_OK, FAILED, NEEDS_RESET, and consistent
// reads of the virtio-scsi configuration.
//
// The transport is pci.hpp's legacy_pci or modern_pci (or anything with their surface).
#pragma once
#include <stdint.h>

#include "status.hpp"
#include "wire.hpp"

namespace vscsi {

struct scsi_config_values {
    uint32_t num_queues;
    uint32_t seg_max;
    uint32_t max_sectors;
    uint32_t cmd_per_lun;
    uint32_t event_info_size;
    uint32_t sense_size;
    uint32_t cdb_size;
    uint16_t max_channel;
    uint16_t max_target;
    uint32_t max_lun;
};

constexpr bool operator==(const scsi_config_values& a, const scsi_config_values& b) {
    return a.num_queues == b.num_queues && a.seg_max == b.seg_max && a.max_sectors == b.max_sectors &&
           a.cmd_per_lun == b.cmd_per_lun && a.event_info_size == b.event_info_size &&
           a.sense_size == b.sense_size && a.cdb_size == b.cdb_size && a.max_channel == b.max_channel &&
           a.max_target == b.max_target && a.max_lun == b.max_lun;
}

template <class Transport>
class virtio_device {
public:
    static constexpr unsigned config_read_attempts = 16;

    explicit virtio_device(Transport& t) : t_(&t) {}

    Transport& transport() { return *t_; }
    const Transport& transport() const { return *t_; }

    // Write 0 and wait until the device reads back 0 (checklist 36).
    status reset(uint32_t max_polls = 1000000) {
        t_->reset();
        stage_ = stage::none;
        features_ = 0;
        for (uint32_t i = 0; i < max_polls; ++i) {
            if (t_->get_status() == 0) {
                stage_ = stage::reset;
                return status::ok;
            }
        }
        return status::timeout;
    }

    status negotiate(uint64_t driver_supported, uint32_t max_polls = 1000000) {
        VSCSI_TRY(reset(max_polls));
        VSCSI_TRY(advance(stage::reset, dev_status::acknowledge));
        VSCSI_TRY(advance(stage::acknowledged, dev_status::acknowledge | dev_status::driver));
        uint64_t offered = t_->device_features();
        const bool legacy = t_->is_legacy();
        if (legacy) offered &= 0xffffffffull;  // only bits 0..31 exist (checklist 57)
        // checklist 33: never accept what was not offered; unknown offered bits are ignored.
        uint64_t accept = offered & driver_supported;
        // This core keeps in-order batches for packed rings only: IN_ORDER goes with RING_PACKED.
        if (!(accept & feature::bit(feature::ring_packed))) accept &= ~feature::bit(feature::in_order);
        if (legacy) {
            accept &= ~feature::bit(feature::version_1);
        } else {
            // A modern transport speaks virtio 1.x only (checklist 34).
            if (!(offered & feature::bit(feature::version_1))) {
                fail();
                return status::device_error;
            }
            accept |= feature::bit(feature::version_1);
            // Legacy-only bits have no meaning on a modern device.
            accept &= ~(feature::bit(feature::notify_on_empty) | feature::bit(feature::any_layout));
        }
        t_->set_driver_features(accept);
        features_ = accept;
        if (legacy) {
            // Legacy devices have no FEATURES_OK step.
            stage_ = stage::features_ok;
            return status::ok;
        }
        VSCSI_TRY(advance(stage::driver, dev_status::acknowledge | dev_status::driver | dev_status::features_ok));
        // checklist 31: the device may refuse by clearing FEATURES_OK.
        if (!(t_->get_status() & dev_status::features_ok)) {
            fail();
            return status::device_error;
        }
        return status::ok;
    }

    uint64_t features() const { return features_; }
    bool has(unsigned bit) const { return (features_ >> bit) & 1; }

    status driver_ok() {
        if (stage_ != stage::features_ok) return status::invalid_argument;  // checklist 32
        t_->set_status(uint8_t(t_->get_status() | dev_status::driver_ok));
        stage_ = stage::running;
        return status::ok;
    }

    // checklist 31/36: FAILED is OR-ed in; no bit is ever cleared except by reset.
    void fail() {
        t_->set_status(uint8_t(t_->get_status() | dev_status::failed));
        stage_ = stage::failed;
    }

    bool needs_reset() { return (t_->get_status() & dev_status::needs_reset) != 0; }
    uint8_t status_bits() { return t_->get_status(); }

    // A consistent snapshot of the config: generation-checked on modern devices, two equal
    // reads on legacy ones (checklist 28, 29).
    status read_scsi_config(scsi_config_values& out) {
        for (unsigned attempt = 0; attempt < config_read_attempts; ++attempt) {
            if (t_->has_config_generation()) {
                const uint8_t before = t_->config_generation();
                scsi_config_values v = read_once();
                if (t_->config_generation() == before) {
                    out = v;
                    return status::ok;
                }
            } else {
                scsi_config_values a = read_once();
                scsi_config_values b = read_once();
                if (a == b) {
                    out = a;
                    return status::ok;
                }
            }
        }
        return status::device_error;  // the config never held still
    }

    // The only config fields a driver may write (checklist 25); call after every reset.
    status write_cdb_sense_sizes(uint32_t cdb_size, uint32_t sense_size) {
        if (stage_ != stage::features_ok && stage_ != stage::running) return status::invalid_argument;
        t_->config_write32(config_offset::cdb_size, cdb_size);
        t_->config_write32(config_offset::sense_size, sense_size);
        return status::ok;
    }

private:
    enum class stage : uint8_t { none, reset, acknowledged, driver, features_ok, running, failed };

    // Status bits are set strictly in order; a call out of order writes nothing.
    status advance(stage expected, uint8_t bits) {
        if (stage_ != expected) return status::invalid_argument;
        t_->set_status(bits);
        stage_ = expected == stage::reset          ? stage::acknowledged
                 : expected == stage::acknowledged ? stage::driver
                                                   : stage::features_ok;
        return status::ok;
    }

    scsi_config_values read_once() {
        scsi_config_values v{};
        v.num_queues = t_->config_read32(config_offset::num_queues);
        v.seg_max = t_->config_read32(config_offset::seg_max);
        v.max_sectors = t_->config_read32(config_offset::max_sectors);
        v.cmd_per_lun = t_->config_read32(config_offset::cmd_per_lun);
        v.event_info_size = t_->config_read32(config_offset::event_info_size);
        v.sense_size = t_->config_read32(config_offset::sense_size);
        v.cdb_size = t_->config_read32(config_offset::cdb_size);
        v.max_channel = t_->config_read16(config_offset::max_channel);
        v.max_target = t_->config_read16(config_offset::max_target);
        v.max_lun = t_->config_read32(config_offset::max_lun);
        return v;
    }

    Transport* t_;
    uint64_t features_ = 0;
    stage stage_ = stage::none;
};

}  // namespace vscsi
