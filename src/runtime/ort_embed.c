/* ort_embed.c: ONNX Runtime as the single-file build carries it (instead of ort_linked.c).
 *
 * `make single` assembles src/runtime/ort_blob.S, which puts the bytes of libonnxruntime.so.1
 * (.incbin) and their SHA-256 (computed by the build) into the executable's read-only data.
 * The first call of ox_ort_api_base loads the library from there:
 *   1. memfd_create: an anonymous in-memory file;
 *   2. in chunks of 256 KiB, hash the embedded bytes (SHA-256) and write each chunk into the
 *      memfd right after hashing it, while it is still in the CPU's cache: the 46 MB are read
 *      from memory once (writing first and hashing the memfd afterwards took one more pass: 67
 *      against 55 ms of CPU on the test machine);
 *   3. seal the memfd (no write, shrink or grow, no more seals) and compare the digest with the
 *      build's; a mismatch stops here, before any of the library's code runs. The memfd holds
 *      exactly the bytes hashed (each write copies from the buffer just hashed, out of the
 *      executable's read-only mapping), and once sealed nobody, not even a process that gets
 *      hold of the fd, can change it;
 *   4. dlopen("/proc/self/fd/N"), dlsym("OrtGetApiBase"), close the fd, and drop the
 *      executable's pages of the blob from the process (MADV_DONTNEED: they stay in the page
 *      cache; without this they would add 46 MB to the RSS).
 * ox_runtime_init then checks the library's version against the header (ox_ort_version_api).
 * The digest guards against a damaged or mixed-up executable, not against an attacker: who can
 * rewrite the executable can rewrite the digest inside it too.
 *
 * Where the library ends up, and what follows from that:
 * - The memfd lives on the kernel's internal shmem mount, not in /dev/shm or /tmp: a noexec
 *   /dev/shm (common hardening) does not matter (tests/integration/test_single.py runs the file
 *   with /dev/shm mounted noexec). What does matter: /proc must be mounted, since dlopen opens
 *   /proc/self/fd/N (a missing /proc gets its own message), and a security module may forbid
 *   executable mappings of memory files. The file is created with MFD_NOEXEC_SEAL where the
 *   kernel knows it (6.3+): it can then never be execve'd, yet the loader may still map it
 *   executable (mmap checks the mount, not the file's mode), and vm.memfd_noexec=2, which
 *   refuses executable memfds, does not stop onnxd. Older kernels get a plain memfd.
 * - Memory: the file's pages are shmem. All of the library (46 MB for ORT 1.30) stays resident
 *   as long as the process runs (it can be swapped, not dropped like the page cache of a file
 *   on disk), whereas the normal build maps libonnxruntime.so.1 from disk and keeps only what it
 *   touches. Two onnxd processes hold two copies (measured: /proc/meminfo's Shmem grows by
 *   44.8 MB with each single-file process, and falls back when it exits); processes of the
 *   normal build share one. Only the pages mapped and touched count in the process's RSS
 *   (RssShmem, about 12-22 MB), so RSS alone understates the single file's memory.
 * - The fd is closed right after dlopen: the loader's mappings keep the file alive, for the life
 *   of the process (the library is never unloaded), so /proc/self/fd/N need not stay open. glibc
 *   keeps "/proc/self/fd/N" as the library's name, so a later dlopen of that exact string would
 *   return this library without opening anything; nothing in onnxd does that. /proc/PID/maps
 *   shows the mappings as "/memfd:libonnxruntime.so.1 (deleted)". The library's RUNPATH,
 *   $ORIGIN, now names /proc/self/fd, where no library file name can exist: its own
 *   dependencies (libstdc++, libgcc_s, glibc's) come from the system, after a few failed opens.
 * - fork (onnxd never forks): a child would share the mappings copy-on-write, as for any
 *   library; the fd is MFD_CLOEXEC (and closed anyway), so an exec'd program never sees it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sha256.h"
#include "runtime/rt_ort.h"

#ifndef MFD_NOEXEC_SEAL /* Linux 6.3; older headers */
#define MFD_NOEXEC_SEAL 0x0008U
#endif

/* Defined by ort_blob.S: the library's bytes, and their SHA-256 in lower-case hex. */
extern const unsigned char ox_ort_blob[], ox_ort_blob_end[];
extern const char ox_ort_blob_sha256[];

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const OrtApiBase *loaded; /* written once, under load_once */
static char load_err[512];
static char origin[160];

/* Hashes the library's bytes into s and writes them to fd, in chunks: each chunk is hashed,
 * then written while it is still in the CPU's cache, so the 46 MB are read from memory once. */
static int hash_and_write(int fd, ox_sha256_t *s, const unsigned char *p, size_t n) {
  enum { CHUNK = 256 << 10 };
  while (n) {
    size_t k = n < CHUNK ? n : CHUNK;
    ox_sha256_update(s, p, k);
    for (size_t done = 0; done < k;) {
      ssize_t w = write(fd, p + done, k - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return w < 0 ? -errno : -EIO;
      done += (size_t)w;
    }
    p += k;
    n -= k;
  }
  return 0;
}

static double ms_since(int64_t t0) {
  return (double)(ox_mono_ns() - t0) / 1e6;
}

static void load(void) {
  size_t n = (size_t)(ox_ort_blob_end - ox_ort_blob);
  int64_t t0 = ox_mono_ns();
  int fd = memfd_create("libonnxruntime.so.1", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
  if (fd < 0 && errno == EINVAL)
    fd = memfd_create("libonnxruntime.so.1", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    snprintf(load_err, sizeof load_err, "cannot create the in-memory file for ONNX Runtime: %s",
             strerror(errno));
    return;
  }
  ox_sha256_t sha;
  ox_sha256_init(&sha);
  int rc = hash_and_write(fd, &sha, ox_ort_blob, n);
  if (!rc && fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    rc = -errno;
  if (rc) {
    snprintf(load_err, sizeof load_err,
             "cannot write ONNX Runtime (%zu bytes) into an in-memory file: %s", n, strerror(-rc));
    close(fd);
    return;
  }
  unsigned char digest[OX_SHA256_BYTES];
  char hex[2 * OX_SHA256_BYTES + 1];
  ox_sha256_final(&sha, digest);
  ox_sha256_hex(digest, hex);
  if (strcmp(hex, ox_ort_blob_sha256) != 0) {
    snprintf(load_err, sizeof load_err,
             "the ONNX Runtime library inside this executable is damaged: its SHA-256 is %s, "
             "the build recorded %s (get the file again)",
             hex, ox_ort_blob_sha256);
    close(fd);
    return;
  }
  double t_copy = ms_since(t0);
  /* The executable's pages of the library were read once and are not needed again: unmap them
   * from this process (they stay in the page cache, reclaimable), or they would count 46 MB in
   * its RSS on top of the memfd's copy. */
  long pg = sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)ox_ort_blob + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
  uintptr_t hi = (uintptr_t)ox_ort_blob_end & ~((uintptr_t)pg - 1);
  if (pg > 0 && hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);

  int64_t t2 = ox_mono_ns();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  close(fd); /* the mappings keep the file alive (see above) */
  if (!h) {
    const char *why = dlerror();
    if (access("/proc/self/fd", F_OK) != 0)
      snprintf(load_err, sizeof load_err,
               "cannot load ONNX Runtime: /proc is not mounted (the single-file onnxd loads its "
               "built-in ONNX Runtime from memory through /proc/self/fd)");
    else
      snprintf(load_err, sizeof load_err, "cannot load the built-in ONNX Runtime: %s",
               why ? why : "dlopen failed");
    return;
  }
  const OrtApiBase *(*get_base)(void) = NULL;
  *(void **)&get_base = dlsym(h, "OrtGetApiBase"); /* POSIX's way to get a function pointer */
  const OrtApiBase *base = get_base ? get_base() : NULL;
  if (!base) {
    snprintf(load_err, sizeof load_err,
             "the built-in ONNX Runtime library has no OrtGetApiBase: not ONNX Runtime");
    return;
  }
  double t_open = ms_since(t2);
  snprintf(origin, sizeof origin,
           "embedded: %.1f MB, SHA-256 verified, loaded from memory in %.0f ms", (double)n / 1e6,
           ms_since(t0));
  ox_debug(
      "onnxruntime: embedded library: %zu bytes, SHA-256 (%s) and copy %.1f ms, dlopen %.1f ms", n,
      ox_sha256_impl(), t_copy, t_open);
  loaded = base;
}

const OrtApiBase *ox_ort_api_base(char *err, size_t errcap) {
  pthread_once(&load_once, load);
  if (!loaded && err && errcap) snprintf(err, errcap, "%s", load_err);
  return loaded;
}

const char *ox_ort_origin(void) {
  return loaded ? origin : "embedded, not loaded";
}
