/* siphash.c: SipHash-2-4, written from the paper's description: four 64-bit words of state
 * initialised from the key and the constants "somepseudorandomlygeneratedbytes", each 8-byte
 * little-endian message word absorbed with 2 SipRounds, the last word holding the remaining
 * bytes and the length's low byte in its top byte, then 0xff xored into v2 and 4 rounds. */
#include "core/siphash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3) \
  do {                           \
    v0 += v1;                    \
    v1 = ROTL(v1, 13);           \
    v1 ^= v0;                    \
    v0 = ROTL(v0, 32);           \
    v2 += v3;                    \
    v3 = ROTL(v3, 16);           \
    v3 ^= v2;                    \
    v0 += v3;                    \
    v3 = ROTL(v3, 21);           \
    v3 ^= v0;                    \
    v2 += v1;                    \
    v1 = ROTL(v1, 17);           \
    v1 ^= v2;                    \
    v2 = ROTL(v2, 32);           \
  } while (0)

static uint64_t le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

ox_siphash_key_t ox_siphash_key_from_bytes(const unsigned char p[OX_SIPHASH_KEY_BYTES]) {
  return (ox_siphash_key_t){le64(p), le64(p + 8)};
}

/* SipHash-2-4's state: initialisation, one compression of a word (2 rounds), finalisation
 * (4 rounds). Shared by the byte-string and the one-word entry points. */
typedef struct {
  uint64_t v0, v1, v2, v3;
} sip_t;

static inline sip_t sip_init(const ox_siphash_key_t *key) {
  return (sip_t){key->k0 ^ 0x736f6d6570736575ULL, key->k1 ^ 0x646f72616e646f6dULL,
                 key->k0 ^ 0x6c7967656e657261ULL, key->k1 ^ 0x7465646279746573ULL};
}

static inline void sip_compress(sip_t *s, uint64_t m) {
  s->v3 ^= m;
  SIPROUND(s->v0, s->v1, s->v2, s->v3);
  SIPROUND(s->v0, s->v1, s->v2, s->v3);
  s->v0 ^= m;
}

static inline uint64_t sip_finish(sip_t *s) {
  s->v2 ^= 0xff;
  for (int r = 0; r < 4; r++) SIPROUND(s->v0, s->v1, s->v2, s->v3);
  return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

uint64_t ox_siphash(const void *data, size_t n, const ox_siphash_key_t *key) {
  const unsigned char *p = data;
  sip_t s = sip_init(key);
  size_t whole = n & ~(size_t)7;
  for (size_t i = 0; i < whole; i += 8) sip_compress(&s, le64(p + i));
  uint64_t b = (uint64_t)n << 56; /* the last block: the length's low byte, then the tail */
  for (size_t i = 0; i < (n & 7); i++) b |= (uint64_t)p[whole + i] << (8 * i);
  sip_compress(&s, b);
  return sip_finish(&s);
}

uint64_t ox_siphash_u64(uint64_t m, const ox_siphash_key_t *key) {
  sip_t s = sip_init(key);
  sip_compress(&s, m);
  sip_compress(&s, (uint64_t)8 << 56); /* the last block of an 8-byte message */
  return sip_finish(&s);
}

int ox_random_bytes(void *out, size_t n) {
  unsigned char *o = out;
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(o + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got == n) return 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  while (got < n) {
    ssize_t r = read(fd, o + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = r < 0 ? -errno : -EIO;
      close(fd);
      return e;
    }
    got += (size_t)r;
  }
  close(fd);
  return 0;
}

int ox_siphash_random_key(ox_siphash_key_t *key) {
  unsigned char b[OX_SIPHASH_KEY_BYTES];
  int rc = ox_random_bytes(b, sizeof b);
  if (rc) return rc;
  *key = ox_siphash_key_from_bytes(b);
  return 0;
}

static ox_siphash_key_t process_key;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void process_key_init(void) {
  if (ox_siphash_random_key(&process_key)) {
    fprintf(stderr, "onnxd: no random source (getrandom, /dev/urandom) for the hash key\n");
    abort();
  }
}

const ox_siphash_key_t *ox_siphash_process_key(void) {
  pthread_once(&process_once, process_key_init);
  return &process_key;
}
