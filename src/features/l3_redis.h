/* l3_redis.h: the Redis half of the remote feature tier (L3): feature rows as string values
 * (key -> opaque blob), read-through GET/MGET and write-through SET, and appends to lists
 * (RPUSH: the feature store's raw events), behind a circuit breaker.
 *
 * Every call takes the caller's deadline (absolute CLOCK_MONOTONIC ns, the clock of
 * ox_mono_ns()) and never blocks past it, nor past now + command_timeout_ms: sockets are
 * non-blocking and every wait is a poll() bounded by the time left, connecting included. A call
 * that times out drops its connection (its reply may still arrive); the next call on that slot
 * reconnects. When the breaker is open, calls fail in well under a microsecond without touching
 * the network, and after the cool-down the next call probes Redis and closes the breaker when it
 * answers.
 *
 * Connections: a fixed pool of pool_size slots, checked out without a lock (l3_pool.h: an atomic
 * flag per slot; each thread starts scanning at its own slot, so with pool_size >= the number of
 * calling threads every thread keeps "its" connection). No slot free means OX_EUNAVAILABLE at once
 * rather than a queue: size the pool to the worker count. Connections open lazily, on first use. A
 * slot's idle connection is checked with a zero-timeout poll before use: Redis never speaks
 * unprompted, so a readable idle socket is a closed (restarted) server and the slot reconnects
 * instead of failing the call.
 *
 * Writes use send(MSG_NOSIGNAL): no SIGPIPE from a server that went away. hiredis 0.14 is used
 * for connecting and for its reply parser; the I/O loop is ours, because redisSetTimeout's
 * SO_RCVTIMEO bounds each read(), not the call, and redisConnectWithTimeout would block for the
 * whole connect timeout whatever the caller's budget.
 *
 * Results: ox_l3_redis_get and _mget return 0 / a hit count, OX_ENOT_FOUND for a miss (get),
 * OX_ETIMEOUT (deadline), OX_EUNAVAILABLE (breaker open, pool exhausted, Redis loading/busy),
 * -errno for connection errors (-ECONNREFUSED, -ECONNRESET, ...), OX_EINTERNAL for an error reply
 * or a protocol error, OX_ENOMEM.
 */
#ifndef OX_FEATURES_L3_REDIS_H
#define OX_FEATURES_L3_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "features/breaker.h"
#include "features/l3_pool.h"

typedef struct {
  const char *host;          /* numeric address or name (resolved at each connect); "127.0.0.1" */
  int port;                  /* 0 = 6379 */
  const char *password;      /* AUTH on connect when non-NULL */
  int db;                    /* SELECT on connect when > 0 */
  int pool_size;             /* 0 = 8 */
  int connect_timeout_ms;    /* 0 = 200; cut shorter by the call's deadline */
  int command_timeout_ms;    /* cap on one call whatever its deadline; 0 = 200 */
  ox_breaker_opts_t breaker; /* zero fields take the breaker's defaults */
} ox_l3_redis_opts_t;

/* connects, connect_failures, dropped, stale, pool_exhausted, breaker: see l3_pool.h. */
typedef ox_l3_stats_t ox_l3_redis_stats_t;

typedef struct ox_l3_redis ox_l3_redis_t;

/* Splits "HOST[:PORT]" (--redis; the port defaults to 6379) into host (NUL-terminated, at
 * most hostcap - 1 bytes) and *port. 0, or OX_EINVALID for an empty host, a host too long, or a
 * port that is not 1 to 65535. */
int ox_l3_redis_split_addr(const char *addr, char *host, size_t hostcap, int *port);

/* Creates the pool (no connection yet; the strings in opts are copied). 0, OX_EINVALID or
 * OX_ENOMEM. Owned: free with ox_l3_redis_destroy once no call is running. */
int ox_l3_redis_create(const ox_l3_redis_opts_t *opts, ox_l3_redis_t **out);
void ox_l3_redis_destroy(ox_l3_redis_t *r);

/* GET key. 0: the value is appended to out (which the caller owns; keep reusing it and the
 * allocation is amortised); OX_ENOT_FOUND: no such key; other errors as above. Thread-safe. */
int ox_l3_redis_get(ox_l3_redis_t *r, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns);

/* MGET of n keys in one round trip. Values are appended to out; vals[i] then points into
 * out->data (valid until out is next changed or freed), or is {NULL, 0} for a miss. Returns the
 * number of hits (>= 0), or an error as above (vals undefined). n == 0 returns 0 with no call. */
int ox_l3_redis_mget(ox_l3_redis_t *r, const ox_slice_t *keys, size_t n, ox_buf_t *out,
                     ox_slice_t *vals, int64_t deadline_ns);

/* SET key value (PX ttl_ms when ttl_ms > 0): write-through. 0 or an error. Thread-safe. */
int ox_l3_redis_set(ox_l3_redis_t *r, ox_slice_t key, ox_slice_t val, int ttl_ms,
                    int64_t deadline_ns);

/* n SETs pipelined in one round trip (same ttl for all). 0 when every SET succeeded; otherwise
 * the first error (some keys may have been written). */
int ox_l3_redis_mset(ox_l3_redis_t *r, const ox_slice_t *keys, const ox_slice_t *vals, size_t n,
                     int ttl_ms, int64_t deadline_ns);

/* n RPUSH keys[i] vals[i] pipelined in one round trip: appends each value to the list at its
 * key, in order (a key given twice gets its values in the order given). 0 when every RPUSH
 * answered an integer (the list's new length); otherwise the first error: an error reply such
 * as WRONGTYPE (the key holds something else than a list) is OX_EINTERNAL, which the breaker
 * does not count. Some values may have been appended then. Thread-safe. */
int ox_l3_redis_rpush_many(ox_l3_redis_t *r, const ox_slice_t *keys, const ox_slice_t *vals,
                           size_t n, int64_t deadline_ns);

/* A generic pipelined call: n commands, command i being the argc[i] arguments that follow
 * command i-1's in argv, sent in one round trip; reps[i] receives command i's reply (owned by
 * the caller: ox_l3_redis_reply_free), error replies included (type REDIS_REPLY_ERROR: the
 * caller judges them; LOADING/BUSY/MASTERDOWN/TRYAGAIN also count as a failure for the
 * breaker). Returns 0 when every reply arrived, else an error as above with every reps[i] NULL.
 * timeout_ms > 0 replaces the pool's command timeout for this call (a blocking XREAD); the call
 * is still bounded by deadline_ns. Thread-safe. */
struct redisReply;
int ox_l3_redis_call(ox_l3_redis_t *r, const ox_slice_t *argv, const size_t *argc, size_t n,
                     struct redisReply **reps, int timeout_ms, int64_t deadline_ns);
void ox_l3_redis_reply_free(struct redisReply *rep);

/* The tier's breaker (borrowed, lives as long as r), for metrics and tests. */
ox_breaker_t *ox_l3_redis_breaker(ox_l3_redis_t *r);
void ox_l3_redis_stats(ox_l3_redis_t *r, ox_l3_redis_stats_t *out);

#endif
