/*
 * lodge-qemu-rofile.so: loaded into a template clone's QEMU (LD_PRELOAD) by
 * Lodge's QEMU driver. QEMU 7.2 opens a memory-backend-file for reading and
 * writing even to map it privately (its readonly=on would make guest RAM
 * read-only), so a clone's QEMU could write its template's memory, which
 * every other clone maps. Here an open of the file named by LODGE_RO_FILE
 * for reading and writing becomes an open for reading: the private mapping
 * needs no more. Lodge also binds that file read-only into QEMU's jail, so
 * that a QEMU that gets around this library still cannot write it.
 *
 * When the guest reports free pages (virtio-balloon free page reporting),
 * QEMU drops them by punching a hole in the memory file and then
 * madvise(MADV_DONTNEED) on its mapping. A clone must not do the first
 * (the file is its template's, and read-only to it): a hole punch in that
 * file succeeds here without reaching it, and the madvise alone gives the
 * clone's private copies of those pages back to the host. The guest then
 * finds the template's page there again, not zeros: its kernel relies on
 * nothing in a free page (Lodge's guests run without init_on_free and page
 * poisoning, which would make QEMU skip or expect zeros).
 *
 * Build: cc -shared -fPIC -O2 -Wall -o lodge-qemu-rofile.so rofile.c -ldl
 * (the Makefile's bin/lodge-qemu-rofile.so).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef int (*open_fn)(const char *, int, ...);
typedef int (*open2_fn)(const char *, int);

typedef int (*fallocate_fn)(int, int, off_t, off_t);

static const char *target;
static open_fn real_open, real_open64;
static open2_fn real_open_2, real_open64_2;
static fallocate_fn real_fallocate, real_fallocate64;
static int target_fd = -1; /* the last descriptor of target opened */

__attribute__((constructor)) static void init(void)
{
	target = getenv("LODGE_RO_FILE");
	real_open = (open_fn)dlsym(RTLD_NEXT, "open");
	real_open64 = (open_fn)dlsym(RTLD_NEXT, "open64");
	real_open_2 = (open2_fn)dlsym(RTLD_NEXT, "__open_2");
	real_open64_2 = (open2_fn)dlsym(RTLD_NEXT, "__open64_2");
	real_fallocate = (fallocate_fn)dlsym(RTLD_NEXT, "fallocate");
	real_fallocate64 = (fallocate_fn)dlsym(RTLD_NEXT, "fallocate64");
}

static int is_target(const char *path)
{
	return target && path && strcmp(path, target) == 0;
}

/* opened records fd if it is target's. */
static int opened(const char *path, int fd)
{
	if (fd >= 0 && is_target(path))
		target_fd = fd;
	return fd;
}

static int readonly(const char *path, int flags)
{
	if (is_target(path) && (flags & O_ACCMODE) == O_RDWR)
		return (flags & ~O_ACCMODE) | O_RDONLY;
	return flags;
}

/* forward calls real with the flags made read-only where they must be,
 * and the mode the caller passed if the flags take one. */
static int forward(open_fn real, const char *path, int flags, va_list ap)
{
	mode_t mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
	return opened(path, real(path, readonly(path, flags), mode));
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int fd = forward(real_open, path, flags, ap);
	va_end(ap);
	return fd;
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	int fd = forward(real_open64, path, flags, ap);
	va_end(ap);
	return fd;
}

int __open_2(const char *path, int flags)
{
	return opened(path, real_open_2(path, readonly(path, flags)));
}

int __open64_2(const char *path, int flags)
{
	return opened(path, real_open64_2(path, readonly(path, flags)));
}

/* A hole punch in the template's file is a no-op (see the top). */
static int punch(fallocate_fn real, int fd, int mode, off_t off, off_t len)
{
	if (target_fd >= 0 && fd == target_fd && (mode & FALLOC_FL_PUNCH_HOLE))
		return 0;
	return real(fd, mode, off, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	return punch(real_fallocate, fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return punch(real_fallocate64, fd, mode, off, len);
}
