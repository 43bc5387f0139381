/* fstream_boot.c: --feature-bootstrap: a new replica's store from a peer's snapshot
 * (GET <url>/v1/features/snapshot), installed as <dir>/data.mdb before the store is opened.
 * A plain blocking HTTP/1.1 client: one request, Connection: close, a Content-Length body
 * written to <dir>/data.mdb.part, fsynced and renamed into place (a crash leaves no half
 * store: the .part file is removed at the next attempt). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "features/fstream.h"

#define BOOT_IO_MS 30000 /* no byte for this long: the peer is gone */

/* "http://HOST[:PORT][/prefix]" -> host, port, prefix (without a trailing '/'). */
static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap,
                     char *prefix, size_t xcap) {
  if (strncmp(url, "http://", 7)) return -1;
  const char *h = url + 7, *end = h + strcspn(h, "/");
  const char *colon = memchr(h, ':', (size_t)(end - h));
  const char *hend = colon ? colon : end;
  if (hend == h || (size_t)(hend - h) >= hcap) return -1;
  memcpy(host, h, (size_t)(hend - h));
  host[hend - h] = 0;
  if (colon) {
    if ((size_t)(end - colon - 1) >= pcap || end == colon + 1) return -1;
    memcpy(port, colon + 1, (size_t)(end - colon - 1));
    port[end - colon - 1] = 0;
  } else {
    snprintf(port, pcap, "80");
  }
  size_t xl = strlen(end);
  while (xl && end[xl - 1] == '/') xl--;
  if (xl >= xcap) return -1;
  memcpy(prefix, end, xl);
  prefix[xl] = 0;
  return 0;
}

static int dial(const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, port, &hints, &ai)) return -EHOSTUNREACH;
  int fd = -ECONNREFUSED;
  for (struct addrinfo *a = ai; a; a = a->ai_next) {
    int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (s < 0) continue;
    struct timeval tv = {BOOT_IO_MS / 1000, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, a->ai_addr, a->ai_addrlen) == 0) {
      fd = s;
      break;
    }
    fd = -errno;
    close(s);
  }
  freeaddrinfo(ai);
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? -errno : -EIO;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Case-insensitive: does line[0..n) start with name (which ends in ':')? */
static int header_is(const char *line, size_t n, const char *name) {
  size_t k = strlen(name);
  return n >= k && !strncasecmp(line, name, k);
}

int ox_fstream_parse_head(const char *buf, size_t len, int *status, long long *clen, char *id,
                          size_t idcap, size_t *body_off) {
  size_t end = 0;
  for (size_t i = 3; i < len && !end; i++)
    if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
      end = i + 1;
  if (!end) return 0;
  *status = 0;
  *clen = -1;
  if (idcap) id[0] = 0;
  /* status line: "HTTP/1.x NNN ..." */
  if (end < 12 || memcmp(buf, "HTTP/1.", 7) || buf[8] != ' ') return -1;
  for (int k = 9; k < 12; k++) {
    if (buf[k] < '0' || buf[k] > '9') return -1;
    *status = *status * 10 + (buf[k] - '0');
  }
  for (size_t p = 0; p < end - 2;) { /* each header line, after the status line */
    const char *nl = memchr(buf + p, '\n', end - p);
    if (!nl) break;
    p = (size_t)(nl - buf) + 1;
    const char *line = buf + p;
    const char *eol = memchr(line, '\r', end - p);
    size_t n = eol ? (size_t)(eol - line) : 0;
    size_t v = 0;
    if (header_is(line, n, "Content-Length:")) {
      v = 15;
      while (v < n && line[v] == ' ') v++;
      long long x = 0;
      size_t d = 0;
      for (; v < n && line[v] >= '0' && line[v] <= '9' && d < 18; v++, d++)
        x = x * 10 + (line[v] - '0');
      if (!d || v != n) return -1; /* not a number, or one beyond 10^18 */
      *clen = x;
    } else if (header_is(line, n, "X-Onnxd-Stream-Id:") && idcap) {
      v = 18;
      while (v < n && line[v] == ' ') v++;
      size_t k = 0;
      for (; v < n && k + 1 < idcap && ((line[v] >= '0' && line[v] <= '9') || line[v] == '-'); v++)
        id[k++] = line[v];
      id[k] = 0;
    }
  }
  *body_off = end;
  return 1;
}

/* One attempt. 0, or -1 with err set. */
static int fetch_once(const char *url, const char *dir, const char *token, char *id, size_t idcap,
                      char *err, size_t errcap) {
  char host[256], port[16], prefix[512];
  if (parse_url(url, host, sizeof host, port, sizeof port, prefix, sizeof prefix)) {
    snprintf(err, errcap, "--feature-bootstrap must be http://HOST[:PORT][/path], not '%.200s'",
             url);
    return -2; /* not worth retrying */
  }
  int fd = dial(host, port);
  if (fd < 0) {
    snprintf(err, errcap, "cannot connect to %s:%s: %s", host, port, strerror(-fd));
    return -1;
  }
  char req[6000];
  int rl = snprintf(req, sizeof req,
                    "GET %s/v1/features/snapshot HTTP/1.1\r\nHost: %s:%s\r\n%s%s%s"
                    "Connection: close\r\n\r\n",
                    prefix, host, port, token ? "Authorization: Bearer " : "", token ? token : "",
                    token ? "\r\n" : "");
  int rc = rl > 0 && (size_t)rl < sizeof req ? write_all(fd, req, (size_t)rl) : -EINVAL;
  /* the head, then the body */
  char head[16384];
  size_t hl = 0, body_off = 0;
  int status = 0;
  long long clen = -1;
  int hr = 0;
  while (!rc && hr == 0) {
    if (hl == sizeof head) {
      rc = -EMSGSIZE;
      break;
    }
    ssize_t n = read(fd, head + hl, sizeof head - hl);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : -ECONNRESET;
      break;
    }
    hl += (size_t)n;
    hr = ox_fstream_parse_head(head, hl, &status, &clen, id, idcap, &body_off);
    if (hr < 0) rc = -EPROTO;
  }
  if (rc) {
    snprintf(err, errcap, "reading the answer of %s: %s", url, strerror(-rc));
    close(fd);
    return -1;
  }
  const char *body = head + body_off;
  if (status != 200 || clen < 0) {
    size_t bl = hl - body_off;
    snprintf(err, errcap, "%s/v1/features/snapshot answered %d: %.*s", url, status,
             (int)(bl > 200 ? 200 : bl), body);
    close(fd);
    return status == 401 || status == 403 || status == 404 ? -2 : -1;
  }
  char part[4096], final[4096];
  snprintf(part, sizeof part, "%s/data.mdb.part", dir);
  snprintf(final, sizeof final, "%s/data.mdb", dir);
  int out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    snprintf(err, errcap, "cannot create %s: %s", part, strerror(errno));
    close(fd);
    return -2;
  }
  long long got = (long long)(hl - body_off);
  if (got > clen) got = clen;
  rc = write_all(out, body, (size_t)got);
  char buf[1 << 16];
  while (!rc && got < clen) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : -ECONNRESET;
      break;
    }
    if (n > clen - got) n = (ssize_t)(clen - got);
    rc = write_all(out, buf, (size_t)n);
    got += n;
  }
  close(fd);
  if (!rc && fsync(out)) rc = -errno;
  close(out);
  if (!rc && rename(part, final)) rc = -errno;
  if (rc) {
    unlink(part);
    snprintf(err, errcap, "receiving the snapshot (%lld of %lld bytes): %s", got, clen,
             strerror(-rc));
    return -1;
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* the rename, durable */
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  ox_info("feature bootstrap: %lld bytes from %s, at stream position %s", clen, url,
          id[0] ? id : "?");
  return 0;
}

int ox_fstream_bootstrap(const char *url, const char *dir, const char *token, int64_t wait_ms,
                         char *err, size_t errcap) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  if (stat(path, &st) == 0) {
    ox_info(
        "feature bootstrap: %s already holds a store; it is kept (--feature-bootstrap "
        "applies to an empty --feature-dir only)",
        dir);
    return 1;
  }
  if (mkdir(dir, 0700) && errno != EEXIST) {
    snprintf(err, errcap, "cannot create --feature-dir %s: %s", dir, strerror(errno));
    return -1;
  }
  int64_t end = ox_mono_ms() + wait_ms;
  for (int attempt = 1;; attempt++) {
    char id[48] = "";
    int rc = fetch_once(url, dir, token, id, sizeof id, err, errcap);
    if (rc == 0) return 0;
    if (rc == -2 || ox_mono_ms() >= end) return -1;
    ox_warn("feature bootstrap: attempt %d: %s; retrying", attempt, err);
    sleep(1);
  }
}
