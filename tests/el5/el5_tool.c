/*
 * What the el5 suite's guests need and their busybox lacks, as one static program (built
 * with musl-gcc -static: Debian's glibc needs a newer kernel than 2.6.18).
 *
 *   el5-tool noecho                        the console (stdin) stops echoing what it reads
 *   el5-tool blksz DEV                     the logical block size the kernel gives a disk
 *   el5-tool reset device|bus|host DEV     ioctl(SG_SCSI_RESET) on a disk node
 *   el5-tool read DEV LBA BLOCKS BLOCK_SIZE TIMEOUT_MS
 *                                          READ(10) through SG_IO with its own timeout
 *
 * `read` prints "status S host H driver D resid R ms T" and exits 0 once the kernel has
 * returned the command, whatever its outcome; the caller judges the outcome. Every error is
 * one line on stderr and exit status 1 (2 for a bad command line).
 */
#include <errno.h>
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h> /* BLKSSZGET */
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: el5-tool noecho | blksz DEV | reset device|bus|host DEV | "
			"read DEV LBA BLOCKS BLOCK_SIZE TIMEOUT_MS\n");
	return 2;
}

static int fail(const char *what, const char *name)
{
	fprintf(stderr, "el5-tool: %s %s: %s\n", what, name, strerror(errno));
	return 1;
}

/* A decimal argument in [0, max]; -1 when it is not one. */
static long long number(const char *s, long long max)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > max)
		return -1;
	return v;
}

static int noecho(void)
{
	struct termios t;

	if (tcgetattr(0, &t) != 0)
		return fail("tcgetattr", "stdin");
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	if (tcsetattr(0, TCSANOW, &t) != 0)
		return fail("tcsetattr", "stdin");
	return 0;
}

/* One ioctl on a device node opened for it; 0, or 1 once said why. */
static int dev_ioctl(const char *dev, int flags, unsigned long request, const char *what, void *arg)
{
	int fd, err;

	fd = open(dev, flags | O_NONBLOCK);
	if (fd < 0)
		return fail("open", dev);
	err = ioctl(fd, request, arg) != 0 ? fail(what, dev) : 0;
	close(fd);
	return err;
}

static int blksz(const char *dev)
{
	int size;

	if (dev_ioctl(dev, O_RDONLY, BLKSSZGET, "BLKSSZGET", &size))
		return 1;
	printf("%d\n", size);
	return 0;
}

static int reset(const char *kind, const char *dev)
{
	int how;

	if (strcmp(kind, "device") == 0)
		how = SG_SCSI_RESET_DEVICE;
	else if (strcmp(kind, "bus") == 0)
		how = SG_SCSI_RESET_BUS;
	else if (strcmp(kind, "host") == 0)
		how = SG_SCSI_RESET_HOST;
	else
		return usage();
	return dev_ioctl(dev, O_RDWR, SG_SCSI_RESET, "SG_SCSI_RESET", &how);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int sg_read(char **argv)
{
	long long lba = number(argv[1], 0xffffffffLL), blocks = number(argv[2], 0xffff);
	long long bs = number(argv[3], 65536), timeout = number(argv[4], 3600 * 1000);
	unsigned char cdb[10] = { 0x28 }, sense[32];
	struct sg_io_hdr h;
	long long start;
	void *buf;

	if (lba < 0 || blocks < 1 || bs < 512 || timeout < 1)
		return usage();
	cdb[2] = lba >> 24;
	cdb[3] = lba >> 16;
	cdb[4] = lba >> 8;
	cdb[5] = lba;
	cdb[7] = blocks >> 8;
	cdb[8] = blocks;
	buf = malloc(blocks * bs);
	if (!buf)
		return fail("malloc", "buffer");
	memset(&h, 0, sizeof(h));
	h.interface_id = 'S';
	h.dxfer_direction = SG_DXFER_FROM_DEV;
	h.cmd_len = sizeof(cdb);
	h.cmdp = cdb;
	h.mx_sb_len = sizeof(sense);
	h.sbp = sense;
	h.dxfer_len = blocks * bs;
	h.dxferp = buf;
	h.timeout = timeout;
	start = now_ms();
	if (dev_ioctl(argv[0], O_RDWR, SG_IO, "SG_IO", &h))
		return 1;
	printf("status %u host %u driver %u resid %d ms %lld\n", h.status, h.host_status,
	       h.driver_status, h.resid, now_ms() - start);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "noecho") == 0)
		return noecho();
	if (argc == 3 && strcmp(argv[1], "blksz") == 0)
		return blksz(argv[2]);
	if (argc == 4 && strcmp(argv[1], "reset") == 0)
		return reset(argv[2], argv[3]);
	if (argc == 7 && strcmp(argv[1], "read") == 0)
		return sg_read(argv + 2);
	return usage();
}
